"""require-tags: deny creating or changing a taggable resource without the required tags (non-empty).

A resource is taggable when its planned values carry `tags` (most AWS resources) or `tag` blocks (the
auto scaling group); tags the provider adds (`default_tags`, in `tags_all`) count. Resources that take no
tags (e.g. terraform_data) are not checked.

Options: `tags`, the required tag keys (required); `ignore_types`, resource types not to check.
"""


def validate(options: dict) -> None:
    tags = options.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
        raise ValueError("tags must be a non-empty list of tag keys, e.g. ['owner', 'environment']")
    if not isinstance(options.get("ignore_types", []), list):
        raise ValueError("ignore_types must be a list of resource types")


def _tags(after: dict) -> dict | None:
    """The resource's tag keys and values, or None when it takes no tags."""
    if "tags" not in after and "tag" not in after:
        return None
    found = {}
    for key in ("tags", "tags_all"):
        if isinstance(after.get(key), dict):
            found.update(after[key])
    for block in after.get("tag") or []:
        if isinstance(block, dict) and "key" in block:
            found[block["key"]] = block.get("value")
    return found


def check(plan: dict, options: dict) -> list:
    required = options["tags"]
    ignored = options.get("ignore_types", [])
    findings = []
    for rc in plan.get("resource_changes") or []:
        change = rc.get("change") or {}
        if rc.get("mode", "managed") != "managed" or rc.get("type") in ignored:
            continue
        if not {"create", "update"} & set(change.get("actions") or []):
            continue
        tags = _tags(change.get("after") or {})
        if tags is None:
            continue
        missing = [key for key in required if not tags.get(key)]
        if missing:
            findings.append(("deny", f"{rc.get('address')} lacks the tag(s) {', '.join(missing)}"))
    return findings
