# The one-process apply's test stack (tests/e2e/test_direct_apply.py, tests/reliability/test_cancel_apply.py):
# one security group and a hold in the apply. No policy selects it and it declares no sensitive output, so
# apply-stack plans and applies it in one `terraform apply -json` unless approval is required.

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
  default = "devops-flows-direct"
}

variable "description" {
  type    = string
  default = "devops-flows one-process apply"
}

variable "apply_hold_seconds" {
  type        = number
  default     = 0
  description = "Testing only: after the security group changes, hold the apply (and its state lock) this long."
}

resource "aws_security_group" "direct" {
  name        = var.name
  description = var.description
  tags = {
    owner       = "devops-flows"
    environment = "sandbox"
  }
}

# Testing only (apply_hold_seconds > 0): an apply still running after AWS changed, so a test can cancel it
# mid-apply. Needs no provider (built in).
resource "terraform_data" "apply_hold" {
  count            = var.apply_hold_seconds > 0 ? 1 : 0
  triggers_replace = [aws_security_group.direct.id]

  provisioner "local-exec" {
    command = "sleep ${var.apply_hold_seconds}"
  }
}

output "security_group_id" {
  value = aws_security_group.direct.id
}

output "security_group_name" {
  value = aws_security_group.direct.name
}
