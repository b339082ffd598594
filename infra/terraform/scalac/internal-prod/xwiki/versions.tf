terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }

  # Configured by the apply-stack flow with -backend-config (bucket, key, region, use_lockfile = true,
  # and for the sandbox: endpoints, use_path_style, skip_*).
  backend "s3" {}
}
