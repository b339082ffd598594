# The smallest useful stack: one security group in the default VPC. Used to prove the Terraform set-up
# (provider mirror, S3 state with native locking, moto endpoints) end to end.

variable "aws_region" {
  type    = string
  default = "eu-central-1"
}

variable "aws_endpoint" {
  type    = string
  default = ""
}

variable "name" {
  type    = string
  default = "devops-flows-smoke"
}

variable "description" {
  type    = string
  default = "devops-flows smoke test"
}

resource "aws_security_group" "smoke" {
  name        = var.name
  description = var.description
}

output "security_group_id" {
  value = aws_security_group.smoke.id
}
