# The policy tests' stack (infra/policies/stacks.toml selects its rules): a security group and a launch
# template, cheap against moto. Its variables make a plan pass, deny (`instance_type` outside the
# allowlist, `owner` empty) or warn (a new `description` replaces the security group).

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
  default = "devops-flows-policy"
}

variable "description" {
  type    = string
  default = "devops-flows policy test"
}

variable "instance_type" {
  type    = string
  default = "t3.nano"
}

variable "owner" {
  type    = string
  default = "platform"
}

variable "environment" {
  type    = string
  default = "sandbox"
}

locals {
  tags = { owner = var.owner, environment = var.environment }
}

resource "aws_security_group" "policy" {
  name        = var.name
  description = var.description
  tags        = local.tags
}

resource "aws_launch_template" "policy" {
  name          = "lt-${var.name}"
  instance_type = var.instance_type
  tags          = local.tags
}

output "security_group_id" {
  value = aws_security_group.policy.id
}

output "launch_template_id" {
  value = aws_launch_template.policy.id
}
