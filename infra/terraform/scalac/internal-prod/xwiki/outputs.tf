output "launch_template_id" {
  value = aws_launch_template.xwiki-lt.id
}

output "launch_template_latest_version" {
  value = aws_launch_template.xwiki-lt.latest_version
}

output "image_id" {
  value = aws_launch_template.xwiki-lt.image_id
}

output "autoscaling_group_name" {
  value = aws_autoscaling_group.xwiki.name
}
