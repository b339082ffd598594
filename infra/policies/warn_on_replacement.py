"""warn-on-replacement: warn on any resource the plan replaces (delete and create), naming the attributes
that force it. A warning makes approval required, even for a scheduled run.

Options: `ignore_types`, resource types whose replacement is routine (default: terraform_data, which is
replaced whenever its triggers change).
"""

IGNORED = ["terraform_data"]


def validate(options: dict) -> None:
    ignored = options.get("ignore_types", IGNORED)
    if not isinstance(ignored, list) or not all(isinstance(t, str) for t in ignored):
        raise ValueError("ignore_types must be a list of resource types")


def check(plan: dict, options: dict) -> list:
    ignored = options.get("ignore_types", IGNORED)
    findings = []
    for rc in plan.get("resource_changes") or []:
        change = rc.get("change") or {}
        actions = change.get("actions") or []
        if rc.get("type") in ignored or not ("delete" in actions and "create" in actions):
            continue
        paths = [".".join(str(p) for p in path) for path in change.get("replace_paths") or []]
        forced = f" (forced by {', '.join(paths)})" if paths else ""
        findings.append(("warn", f"{rc.get('address')} would be replaced{forced}"))
    return findings
