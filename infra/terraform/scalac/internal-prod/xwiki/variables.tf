variable "aws_region" {
  type        = string
  default     = "eu-central-1"
  description = "AWS region of the stack."
}

variable "aws_endpoint" {
  type        = string
  default     = ""
  description = "Custom AWS endpoint (moto in the sandbox); empty for real AWS."
}

variable "name" {
  type        = string
  default     = "xwiki"
  description = "Name of the auto scaling group, prefix of the launch template and the Name tag."
}

variable "ami_id" {
  type        = string
  default     = ""
  description = "AMI for the launch template (set by the ami-rollout flow). Empty: the newest self-owned AMI named ami_name."
}

variable "ami_name" {
  type        = string
  default     = "xwiki_ubuntu18.04_*"
  description = "AMI name pattern looked up when ami_id is empty (Packer's hostname_os_name_contenthash)."
}

variable "ami_root_device_type" {
  type        = string
  default     = "ebs"
  description = "Root device type filter of the AMI lookup (moto reports images it creates as 'standard')."
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "environment" {
  type    = string
  default = "prod"
}

variable "owner" {
  type        = string
  default     = "platform"
  description = "Team that owns the stack: the `owner` tag (infra/policies require-tags)."
}

variable "project" {
  type    = string
  default = "xwiki"
}

variable "root_volume_size" {
  type    = number
  default = 50
}

variable "asg_launch_template_version" {
  type        = string
  default     = "$Latest"
  description = "Launch template version the ASG uses: $Latest follows every rollout; a number pins one."
}

variable "asg_size" {
  type        = number
  default     = 3
  description = "Instances of the xwiki ASG (ami-rollout replaces them in batches with each new AMI)."

  validation {
    condition     = var.asg_size >= 1 && var.asg_size <= 20
    error_message = "asg_size must be between 1 and 20."
  }
}

variable "apply_hold_seconds" {
  type        = number
  default     = 0
  description = "Testing only: after the launch template changes, hold the apply (and its state lock) this long."
}
