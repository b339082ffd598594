"""What Terraform says about a plan: the summary of `terraform show -json PLAN` (resource changes,
output changes, and drift: objects changed outside Terraform, noise left out) and the `Error:` blocks of a
failed command's output. Pure parsing, no process."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "AttributeChange",
    "OutputValue",
    "PlanSummary",
    "ResourceChange",
    "Workspace",
    "error_blocks",
    "summarize_plan",
]


class Workspace(BaseModel):
    """A private copy of infra/terraform where one stack is initialised, planned and applied."""

    stack: str
    root: str
    path: str
    state_key: str


class OutputValue(BaseModel):
    """One output of a stack, as `output -json` and the `outputs` message of `apply -json` give it."""

    value: Any = None
    type: Any = None
    sensitive: bool = False


class AttributeChange(BaseModel):
    name: str
    old: Any = None
    new: Any = None
    known_after_apply: bool = False

    def render(self) -> str:
        new = "(known after apply)" if self.known_after_apply else _short(self.new)
        return f"`{self.name}`: {_short(self.old)} -> {new}"


class ResourceChange(BaseModel):
    address: str
    type: str = ""
    actions: list[str] = Field(description="Terraform actions: create, update, delete, or delete+create")
    changed: list[AttributeChange] = Field(default_factory=list)

    @property
    def action(self) -> str:
        if self.actions in (["delete", "create"], ["create", "delete"]):
            return "replace"
        return "+".join(self.actions)


class PlanSummary(BaseModel):
    """What `terraform plan` would do, from `terraform show -json`.

    A change is a resource change, an output change, or drift: an object that changed outside Terraform
    (`resource_drift`: AWS differs from the state), e.g. a launch template version created by an apply
    whose state write was lost. A plan whose only changes are drift and outputs changes no
    infrastructure; applying it (`refresh_only`) only saves the refreshed state."""

    stack: str
    has_changes: bool
    add: int = 0
    change: int = 0
    destroy: int = 0
    drift: int = Field(0, description="Objects changed outside Terraform (noise such as null vs [] left out)")
    resources: list[ResourceChange] = Field(default_factory=list)
    drifted: list[ResourceChange] = Field(default_factory=list, description="What changed outside Terraform")
    output_changes: dict[str, str] = Field(default_factory=dict)
    workspace: Workspace | None = Field(default=None, description="Where the saved plan is kept for apply")

    @property
    def refresh_only(self) -> bool:
        """Changes, but none to a resource: applying only writes the refreshed state and outputs."""
        return self.has_changes and not self.resources

    def resource(self, address: str) -> ResourceChange | None:
        return next((r for r in self.resources if r.address == address), None)

    def counts(self) -> str:
        text = f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"
        if self.drift:
            text += f", {self.drift} changed outside Terraform"
        if self.output_changes and not self.resources:
            text += f", {len(self.output_changes)} output(s) to update"
        return text if self.has_changes else "no changes"

    def markdown(self) -> str:
        lines = [
            f"# Terraform plan: `{self.stack}`",
            "",
            f"**{self.counts()}**"
            if self.has_changes
            else "**No changes.** The infrastructure matches the configuration.",
        ]
        if self.refresh_only:
            lines += ["", "No infrastructure changes: applying saves the refreshed state (`-refresh-only`)."]
        if self.drifted:
            lines += ["", "**Changed outside Terraform (drift):**", ""] + _table(self.drifted, "Change")
        if self.resources:
            lines += [""] + _table(self.resources, "Action")
        if self.output_changes:
            lines += [
                "",
                "Outputs: " + ", ".join(f"`{k}` ({v})" for k, v in sorted(self.output_changes.items())),
            ]
        return "\n".join(lines)


def _table(resources: list[ResourceChange], action: str) -> list[str]:
    lines = [f"| Resource | {action} | Changed attributes |", "|---|---|---|"]
    for res in resources:
        attrs = "<br>".join(c.render() for c in res.changed[:15]) or "-"
        if len(res.changed) > 15:
            attrs += f"<br>... {len(res.changed) - 15} more"
        attrs = attrs.replace("|", "\\|")
        lines.append(f"| `{res.address}` | {res.action} | {attrs} |")
    return lines


PlanSummary.model_rebuild()


def error_blocks(tail: Iterable[str]) -> list[str]:
    """Terraform's own diagnostics in an output tail: each `Error:` line and the lines after it up to the
    next diagnostic (`Error:`/`Warning:`), trailing blank lines dropped; empty when there is none."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in tail:
        text = line.lstrip("│╷╵ ").rstrip()
        if text.startswith("Error:"):
            current = [text]
            blocks.append(current)
        elif text.startswith("Warning:"):
            current = None
        elif current is not None:
            current.append(text)
    lines: list[str] = []
    for block in blocks:
        while block and not block[-1]:
            block.pop()
        lines += block
    return lines


def summarize_plan(stack: str, show: Mapping[str, Any]) -> PlanSummary:
    """A PlanSummary from `terraform show -json PLAN` (format 1.x)."""
    resources: list[ResourceChange] = []
    add = change = remove = 0
    for rc in show.get("resource_changes") or []:
        actions = list((rc.get("change") or {}).get("actions") or [])
        if actions in (["no-op"], ["read"]) or not actions:
            continue
        add += "create" in actions
        change += actions == ["update"]
        remove += "delete" in actions
        resources.append(
            ResourceChange(
                address=rc.get("address", "?"),
                type=rc.get("type", ""),
                actions=actions,
                changed=_changed_attributes(rc.get("change") or {}),
            )
        )
    output_changes = {
        name: "+".join(oc.get("actions") or [])
        for name, oc in (show.get("output_changes") or {}).items()
        if (oc.get("actions") or []) not in (["no-op"], [])
    }
    drifted = [d for d in (_drift(rd) for rd in show.get("resource_drift") or []) if d is not None]
    return PlanSummary(
        stack=stack,
        has_changes=bool(resources or output_changes or drifted),
        add=add,
        change=change,
        destroy=remove,
        drift=len(drifted),
        resources=resources,
        drifted=drifted,
        output_changes=output_changes,
    )


def _drift(rd: Mapping[str, Any]) -> ResourceChange | None:
    """A `resource_drift` entry as a ResourceChange, or None when it is noise: no value differs once
    null, "", [] and {} count as the same (the provider reads back empty collections as null)."""
    change = rd.get("change") or {}
    actions = list(change.get("actions") or [])
    if actions in (["no-op"], ["read"], []):
        return None
    if _meaningful(change.get("before")) == _meaningful(change.get("after")):
        return None
    meaningful = {
        **change,
        "before": _meaningful(change.get("before")) or {},
        "after": _meaningful(change.get("after")) or {},
    }
    return ResourceChange(
        address=rd.get("address", "?"),
        type=rd.get("type", ""),
        actions=actions,
        changed=_changed_attributes(meaningful),
    )


def _meaningful(value: Any) -> Any:
    """`value` with empty values (None, "", [], {}) removed from dicts and turned into None."""
    if isinstance(value, dict):
        kept = {k: v for k, v in ((k, _meaningful(v)) for k, v in value.items()) if v is not None}
        return kept or None
    if isinstance(value, list):
        items = [_meaningful(v) for v in value]
        return items if any(v is not None for v in items) else None
    return None if value == "" else value


def _changed_attributes(change: Mapping[str, Any]) -> list[AttributeChange]:
    before = change.get("before") or {}
    after = change.get("after") or {}
    unknown = change.get("after_unknown") or {}
    sensitive = {**_truthy(change.get("before_sensitive")), **_truthy(change.get("after_sensitive"))}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    changes = []
    for name in sorted(set(before) | set(after) | set(unknown if isinstance(unknown, dict) else {})):
        is_unknown = isinstance(unknown, dict) and unknown.get(name) is True
        old, new = before.get(name), after.get(name)
        if old == new and not is_unknown:
            continue
        if not change.get("before") and new in (None, [], {}, "") and not is_unknown:
            continue  # a create: only show what is set
        if name in sensitive:
            old, new = "(sensitive)", "(sensitive)"
        changes.append(AttributeChange(name=name, old=old, new=new, known_after_apply=is_unknown))
    return changes


def _truthy(value: Any) -> dict[str, bool]:
    return {k: True for k, v in value.items() if v} if isinstance(value, dict) else {}


def _short(value: Any, limit: int = 60) -> str:
    if value is None:
        return "null"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return f"`{text if len(text) <= limit else text[: limit - 3] + '...'}`"
