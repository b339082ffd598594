"""instance-type-allowlist: deny an instance type outside the allowlist, on any resource the plan creates
or changes that sets `instance_type` (launch templates, instances, launch configurations). A resource
that leaves the type unset passes; a type only known after apply is a warning (nobody can check it now).

Options: `allowed`, the list of instance types (required).
"""


def validate(options: dict) -> None:
    allowed = options.get("allowed")
    if not isinstance(allowed, list) or not allowed or not all(isinstance(t, str) for t in allowed):
        raise ValueError("allowed must be a non-empty list of instance types, e.g. ['t3.small']")


def check(plan: dict, options: dict) -> list:
    allowed = options["allowed"]
    findings = []
    for rc in plan.get("resource_changes") or []:
        change = rc.get("change") or {}
        if rc.get("mode", "managed") != "managed" or not {"create", "update"} & set(
            change.get("actions") or []
        ):
            continue
        after = change.get("after") or {}
        unknown = change.get("after_unknown") or {}
        if isinstance(unknown, dict) and unknown.get("instance_type") is True:
            findings.append(("warn", f"{rc.get('address')}: instance_type is known only after apply"))
            continue
        instance_type = after.get("instance_type") if isinstance(after, dict) else None
        if instance_type and instance_type not in allowed:
            listed = ", ".join(allowed)
            findings.append(
                ("deny", f"{rc.get('address')}: instance type {instance_type} is not allowed ({listed})")
            )
    return findings
