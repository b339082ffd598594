"""Converged: skip Terraform when nothing that decides the plan changed, and only when AWS agrees.

After an apply (or an empty plan) apply-stack writes a `ConvergedRecord` next to the state
(`<key>.converged.json`): the inputs' fingerprint, the variables of that apply and the state it left
(lineage, serial). A later run with the same fingerprint whose state is still that one may skip
init/plan/show, but the record only proves what *Terraform* last wrote. An apply interrupted after AWS
changed and before the state was written (a second signal, a killed process) leaves AWS ahead of the
state with the record and the serial untouched. So the facts the shortcut relies on are checked against
AWS first (`state_facts` vs the same facts read with boto3, compared by `fact_differences`): each
launch template's latest and default version and the latest version's image, each auto scaling group's
launch template id and version. Any difference means "plan".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from tools.aws import AutoScalingGroupFacts, LaunchTemplateFacts
from tools.redact import register_secret
from tools.terraform import TERRAFORM_DIR
from tools.terraform_plan import OutputValue

CONVERGED_SUFFIX = ".converged.json"
_NOT_CONFIG = (".terraform", "__pycache__")

__all__ = [
    "CONVERGED_SUFFIX",
    "ConvergedRecord",
    "StateFacts",
    "StateHead",
    "fact_differences",
    "is_converged",
    "stack_fingerprint",
    "state_facts",
    "state_head",
]


class StateHead(BaseModel):
    """What a remote state says about itself: which history it is (lineage), how far along (serial)."""

    lineage: str
    serial: int
    outputs: dict[str, OutputValue] = Field(default_factory=dict)


class ConvergedRecord(BaseModel):
    """Written next to the state after an apply (or an empty plan) with these inputs: the state it left,
    and the (non-secret) variables of that apply, which detect-drift plans with."""

    fingerprint: str
    lineage: str
    serial: int
    variables: dict[str, str] | None = Field(None, description="Variables of that apply (None: not kept)")
    recorded_at: str = ""
    flow_run: str = ""


class StateFacts(BaseModel):
    """The AWS objects whose drift the converged shortcut must not miss, as a state (or AWS) has them."""

    launch_templates: list[LaunchTemplateFacts] = Field(default_factory=list)
    auto_scaling_groups: list[AutoScalingGroupFacts] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.launch_templates or self.auto_scaling_groups)


def stack_fingerprint(
    stack: str, variables: Mapping[str, str], context: Mapping[str, str], base: Path = TERRAFORM_DIR
) -> str:
    """sha256 of everything of ours that decides a plan: every file of the stacks tree (the stack, local
    modules, var files), the variables and the backend/provider context (state key, region, endpoint)."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in base.rglob("*")
        if p.is_file()
        and not any(part in _NOT_CONFIG for part in p.relative_to(base).parts)
        and not p.name.endswith((".tfstate", ".tfstate.backup", ".tfplan", ".pyc"))
    )
    for path in files:
        digest.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    inputs = {"stack": stack, "variables": dict(variables), "context": dict(context)}
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    return digest.hexdigest()


def state_head(raw: bytes | str | None) -> StateHead | None:
    """Lineage, serial and outputs of a Terraform state file (format 4), or None when it is not one."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        head = StateHead.model_validate(
            {"lineage": data["lineage"], "serial": data["serial"], "outputs": data.get("outputs") or {}}
        )
    except (ValueError, KeyError, TypeError):
        return None
    for out in head.outputs.values():
        if out.sensitive and isinstance(out.value, str):
            register_secret(out.value)
    return head


def is_converged(record: ConvergedRecord | None, fingerprint: str, head: StateHead | None) -> bool:
    """True when `record` says these exact inputs were applied last and the state is still the one that
    apply left (same lineage and serial: nobody wrote the state since)."""
    return (
        record is not None
        and head is not None
        and record.fingerprint == fingerprint
        and (record.lineage, record.serial) == (head.lineage, head.serial)
    )


def state_facts(raw: bytes | str | None) -> StateFacts:
    """The launch templates and auto scaling groups of a state file (managed resources, any module)."""
    facts = StateFacts()
    try:
        resources = json.loads(raw or "{}").get("resources") or []
    except (ValueError, AttributeError):
        return facts
    for res in resources:
        if res.get("mode") != "managed":
            continue
        for inst in res.get("instances") or []:
            attrs = inst.get("attributes") or {}
            if res.get("type") == "aws_launch_template" and attrs.get("id"):
                facts.launch_templates.append(
                    LaunchTemplateFacts(
                        launch_template_id=attrs["id"],
                        latest_version=attrs.get("latest_version"),
                        default_version=attrs.get("default_version"),
                        latest_image_id=attrs.get("image_id") or None,
                    )
                )
            elif res.get("type") == "aws_autoscaling_group" and attrs.get("name"):
                spec = (attrs.get("launch_template") or [{}])[0] or {}
                facts.auto_scaling_groups.append(
                    AutoScalingGroupFacts(
                        name=attrs["name"],
                        launch_template_id=spec.get("id") or None,
                        launch_template_version=spec.get("version") or None,
                    )
                )
    return facts


def fact_differences(recorded: StateFacts, live: StateFacts) -> list[str]:
    """How AWS (`live`) differs from the state (`recorded`), one sentence each; empty when they agree.
    An object of the state that AWS no longer has is a difference too."""
    found: list[str] = []
    live_lts = {lt.launch_template_id: lt for lt in live.launch_templates}
    for lt in recorded.launch_templates:
        now = live_lts.get(lt.launch_template_id)
        if now is None:
            found.append(f"launch template {lt.launch_template_id} is gone from AWS")
            continue
        for field in ("latest_version", "default_version", "latest_image_id"):
            before, after = getattr(lt, field), getattr(now, field)
            if before is not None and before != after:
                found.append(f"launch template {lt.launch_template_id} {field}: state {before}, AWS {after}")
    live_asgs = {g.name: g for g in live.auto_scaling_groups}
    for group in recorded.auto_scaling_groups:
        now = live_asgs.get(group.name)
        if now is None:
            found.append(f"auto scaling group {group.name} is gone from AWS")
            continue
        for field in ("launch_template_id", "launch_template_version"):
            before, after = getattr(group, field), getattr(now, field)
            if before != after:
                found.append(f"auto scaling group {group.name} {field}: state {before}, AWS {after}")
    return found
