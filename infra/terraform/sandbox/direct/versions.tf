terraform {
  required_version = ">= 1.10" # the S3 backend's use_lockfile

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
