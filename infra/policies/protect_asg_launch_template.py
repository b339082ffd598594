"""protect-asg-launch-template: deny destroying or replacing (delete + create) an auto scaling group or a
launch template. Replacing the ASG takes every instance down; a new launch template loses its version
history and the ASG's reference to it. Changing a launch template in place (a new version: what every AMI
rollout does) passes.

Options: `types`, the resource types to protect (default: aws_autoscaling_group, aws_launch_template).
"""

PROTECTED = ["aws_autoscaling_group", "aws_launch_template"]


def validate(options: dict) -> None:
    types = options.get("types", PROTECTED)
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        raise ValueError("types must be a list of resource type names")


def check(plan: dict, options: dict) -> list:
    types = options.get("types", PROTECTED)
    findings = []
    for rc in plan.get("resource_changes") or []:
        if rc.get("mode", "managed") != "managed" or rc.get("type") not in types:
            continue
        actions = (rc.get("change") or {}).get("actions") or []
        if "delete" in actions:
            what = "replaced (delete and create)" if "create" in actions else "destroyed"
            findings.append(("deny", f"{rc.get('address')} would be {what}"))
    return findings
