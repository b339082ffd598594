"""Orphans of a killed first apply: objects AWS created whose creation never reached the state.

A first apply killed after AWS created the security group, launch template or auto scaling group but
before Terraform wrote its state leaves objects the next plan wants to CREATE again: the ASG's fixed name
then fails every rerun with AlreadyExists (and the name_prefix objects would leak). For each such create,
the object that already exists is found by its name: exactly (`name`), or for `name_prefix` by the
prefix followed by Terraform's unique suffix (18 digits of UTC time and 8 hex digits of a counter). The
evidence chain of one apply is preferred: the launch template the existing ASG uses, the security group
that launch template uses; otherwise a prefixed name is adopted only when exactly one object matches.
The caller imports each (`terraform import ADDRESS ID`) and plans again. No Prefect here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from tools.aws import call

__all__ = ["Adoption", "Existing", "Wanted", "choose_adoptions", "existing_objects", "wanted_creates"]

ADOPTABLE = ("aws_autoscaling_group", "aws_launch_template", "aws_security_group")
UNIQUE_SUFFIX = r"\d{18}[0-9a-f]{8}"


class Wanted(BaseModel):
    """A resource the plan wants to create, with the name it will have (exact or prefix)."""

    address: str
    type: str
    name: str = ""
    name_prefix: str = ""

    def matches(self, existing_name: str) -> bool:
        if self.name:
            return existing_name == self.name
        return bool(self.name_prefix) and re.fullmatch(
            re.escape(self.name_prefix) + UNIQUE_SUFFIX, existing_name
        )


class Existing(BaseModel):
    """What AWS holds, by type: id -> name, and the references between them."""

    groups: dict[str, str] = Field(default_factory=dict, description="ASG name -> its launch template id")
    launch_templates: dict[str, str] = Field(default_factory=dict, description="id -> name")
    launch_template_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="launch template id -> security group ids of its latest version"
    )
    security_groups: dict[str, str] = Field(default_factory=dict, description="id -> name")


class Adoption(BaseModel):
    address: str
    id: str
    name: str

    def describe(self) -> str:
        return f"{self.address} <- {self.id} ({self.name})"


def wanted_creates(plan: Mapping[str, Any]) -> list[Wanted]:
    """The adoptable resources `terraform show -json PLAN` wants to create (a pure create, not a replace)."""
    found = []
    for change in plan.get("resource_changes") or []:
        actions = (change.get("change") or {}).get("actions") or []
        if change.get("mode") != "managed" or change.get("type") not in ADOPTABLE or actions != ["create"]:
            continue
        after = (change.get("change") or {}).get("after") or {}
        name = after.get("name") if isinstance(after.get("name"), str) else ""
        prefix = after.get("name_prefix") if isinstance(after.get("name_prefix"), str) else ""
        if name or prefix:
            found.append(
                Wanted(address=change["address"], type=change["type"], name=name, name_prefix=prefix)
            )
    return found


def _pick(want: Wanted, objects: Mapping[str, str], preferred: set[str]) -> str | None:
    matching = [oid for oid, name in objects.items() if want.matches(name)]
    chained = [oid for oid in matching if oid in preferred]
    if len(chained) == 1:
        return chained[0]
    return matching[0] if len(matching) == 1 else None


def choose_adoptions(wanted: list[Wanted], existing: Existing) -> list[Adoption]:
    """Which existing object each wanted create adopts (none when nothing or several match)."""
    out: list[Adoption] = []
    by_type = {t: [w for w in wanted if w.type == t] for t in ADOPTABLE}
    lt_ids: set[str] = set()
    for want in by_type["aws_autoscaling_group"]:
        name = next((n for n in existing.groups if want.matches(n)), None)
        if name is not None:
            out.append(Adoption(address=want.address, id=name, name=name))
            lt_ids.add(existing.groups[name])
    sg_ids: set[str] = set()
    for want in by_type["aws_launch_template"]:
        lt = _pick(want, existing.launch_templates, lt_ids)
        if lt is not None:
            out.append(Adoption(address=want.address, id=lt, name=existing.launch_templates[lt]))
            sg_ids.update(existing.launch_template_groups.get(lt, []))
    for want in by_type["aws_security_group"]:
        sg = _pick(want, existing.security_groups, sg_ids)
        if sg is not None:
            out.append(Adoption(address=want.address, id=sg, name=existing.security_groups[sg]))
    return out


def existing_objects(ec2: Any, autoscaling: Any, wanted: list[Wanted]) -> Existing:
    """The AWS objects that could be the wanted ones (only the types wanted are listed)."""
    types = {w.type for w in wanted}
    existing = Existing()
    if "aws_autoscaling_group" in types:
        names = [w.name for w in wanted if w.type == "aws_autoscaling_group" and w.name]
        groups = call(
            "describe_auto_scaling_groups",
            autoscaling.describe_auto_scaling_groups,
            AutoScalingGroupNames=names,
        )["AutoScalingGroups"]
        for group in groups:
            spec = group.get("LaunchTemplate") or (group.get("MixedInstancesPolicy") or {}).get(
                "LaunchTemplate", {}
            ).get("LaunchTemplateSpecification", {})
            existing.groups[group["AutoScalingGroupName"]] = spec.get("LaunchTemplateId", "")
    if "aws_launch_template" in types:
        templates = call("describe_launch_templates", ec2.describe_launch_templates)["LaunchTemplates"]
        wants = [w for w in wanted if w.type == "aws_launch_template"]
        for lt in templates:
            if any(w.matches(lt["LaunchTemplateName"]) for w in wants):
                existing.launch_templates[lt["LaunchTemplateId"]] = lt["LaunchTemplateName"]
                existing.launch_template_groups[lt["LaunchTemplateId"]] = _template_groups(ec2, lt)
    if "aws_security_group" in types:
        groups = call("describe_security_groups", ec2.describe_security_groups)["SecurityGroups"]
        existing.security_groups = {g["GroupId"]: g["GroupName"] for g in groups}
    return existing


def _template_groups(ec2: Any, lt: Mapping[str, Any]) -> list[str]:
    versions = call(
        "describe_launch_template_versions",
        ec2.describe_launch_template_versions,
        LaunchTemplateId=lt["LaunchTemplateId"],
        Versions=[str(lt.get("LatestVersionNumber", "$Latest"))],
    )["LaunchTemplateVersions"]
    data = versions[0].get("LaunchTemplateData", {}) if versions else {}
    groups = list(data.get("SecurityGroupIds") or [])
    for interface in data.get("NetworkInterfaces") or []:
        groups += interface.get("Groups") or []
    return groups
