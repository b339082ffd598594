# The article's xwiki launch template and auto scaling group. The image comes from var.ami_id (the
# ami-rollout flow passes the AMI it baked), or from the article's aws_ami lookup when it is empty.

data "aws_ami" "ubuntu" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true

  filter {
    name   = "name"
    values = [var.ami_name]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = [var.ami_root_device_type]
  }

  owners = ["self"]
}

# The article reads the subnet from the internal-prod VPC stack's remote state; this stack stands alone
# and uses the region's default VPC (moto has one per region too).
data "aws_vpc" "default" {
  default = true
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }
}

resource "aws_security_group" "xwiki" {
  name_prefix = "${var.name}-"
  description = "xwiki instances"
  vpc_id      = data.aws_vpc.default.id

  tags = {
    Name        = var.name
    environment = var.environment
    owner       = var.owner
    project     = var.project
  }
}

resource "aws_launch_template" "xwiki-lt" {
  name_prefix = "lt-${var.name}"
  image_id    = var.ami_id != "" ? var.ami_id : data.aws_ami.ubuntu[0].id

  block_device_mappings {
    device_name = "/dev/sda1"

    ebs {
      volume_size = var.root_volume_size
      volume_type = "gp2"
    }
  }

  instance_type = var.instance_type

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = true
    security_groups             = [aws_security_group.xwiki.id]
  }

  tag_specifications {
    resource_type = "volume"

    tags = {
      Name        = "${var.name}-root-volume"
      environment = var.environment
    }
  }

  tags = {
    Name        = var.name
    environment = var.environment
    owner       = var.owner
    project     = var.project
  }
}

resource "aws_autoscaling_group" "xwiki" {
  name             = var.name
  min_size         = var.asg_size
  max_size         = var.asg_size + 1 # room for one replacement while a batch is swapped
  desired_capacity = var.asg_size
  force_delete     = false

  launch_template {
    id      = aws_launch_template.xwiki-lt.id
    version = var.asg_launch_template_version
  }

  vpc_zone_identifier = [sort(data.aws_subnets.default.ids)[0]]

  tag {
    key                 = "Name"
    value               = var.name
    propagate_at_launch = true
  }

  tag {
    key                 = "environment"
    value               = var.environment
    propagate_at_launch = true
  }

  tag {
    key                 = "owner"
    value               = var.owner
    propagate_at_launch = true
  }

  tag {
    key                 = "project"
    value               = var.project
    propagate_at_launch = true
  }
}

# Testing only (apply_hold_seconds > 0): an apply that is still running after the launch template changed,
# so a test can kill it mid-apply and prove the next run converges. Needs no provider (built in).
resource "terraform_data" "apply_hold" {
  count            = var.apply_hold_seconds > 0 ? 1 : 0
  triggers_replace = [aws_launch_template.xwiki-lt.latest_version]

  provisioner "local-exec" {
    command = "sleep ${var.apply_hold_seconds}"
  }
}
