# aws_endpoint is empty for real AWS. The sandbox sets it (TF_VAR_aws_endpoint) to moto's URL; only then
# are the endpoints overridden and the credential/account checks skipped.
locals {
  sandbox = var.aws_endpoint != ""
}

provider "aws" {
  region = var.aws_region

  skip_credentials_validation = local.sandbox
  skip_metadata_api_check     = local.sandbox
  skip_requesting_account_id  = local.sandbox
  skip_region_validation      = local.sandbox

  endpoints {
    ec2         = local.sandbox ? var.aws_endpoint : null
    autoscaling = local.sandbox ? var.aws_endpoint : null
    iam         = local.sandbox ? var.aws_endpoint : null
    sts         = local.sandbox ? var.aws_endpoint : null
  }
}
