"""The rollout reaches the running servers: the auto scaling group's instances replaced in batches with the
launch template's new version, each batch through a health gate (tools/instance_refresh.py).

On AWS the Auto Scaling instance refresh API does the replacing; the gate checks the new instances as
they come into service and cancels the refresh when one fails. Where the endpoint does not implement that
API (moto), the same step replaces the instances itself: terminate one batch inside the group, wait for
its replacements InService on the new image, gate them, next batch. A failed gate raises
InstanceRefreshFailed naming the batch and the reason; the rollout then moves the launch template back
and replaces the refreshed instances again (`restore_instances`).
"""

from __future__ import annotations

import time
from string import Formatter
from typing import Any, Literal
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK
from tasks.aws import clients
from tools import instance_refresh as refresh
from tools.aws import AutoScalingGroupFacts, template_image
from tools.errors import InstanceRefreshFailed, InvalidInput
from tools.http_check import http_ok
from tools.instance_refresh import Member, Preferences
from tools.process import default_logger

PLACEHOLDERS = frozenset({"private_ip", "instance_id"})


class HealthGate(BaseModel):
    """What makes a new instance healthy, checked for every batch within a deadline."""

    check: Literal["ec2", "http", "both", "none"] = Field(
        "ec2", description="ec2: instance and system status checks; http: the URL answers 2xx/3xx"
    )
    url_template: str | None = Field(
        None,
        description="URL of each new instance, e.g. http://{private_ip}:8080/health ({instance_id} too)",
        pattern=r"^https?://\S+$",
        max_length=300,
    )
    deadline_seconds: int = Field(300, ge=1, le=3600, description="per batch")

    def check_inputs(self) -> None:
        if self.check in ("http", "both") and not self.url_template:
            raise InvalidInput(f"health check {self.check!r} needs url_template")
        if self.url_template:
            names = {name for _, name, _, _ in Formatter().parse(self.url_template) if name is not None}
            if names - PLACEHOLDERS:
                raise InvalidInput(
                    "url_template may use only {private_ip} and {instance_id}, not "
                    + ", ".join(sorted(names - PLACEHOLDERS))
                )


class RefreshSpec(BaseModel):
    """The rollout form's instance refresh section; the defaults suit the sandbox's ASG of 3."""

    enabled: bool = Field(True, description="Replace the running instances after the launch template moved")
    preferences: Preferences = Field(default_factory=Preferences)
    health: HealthGate = Field(default_factory=HealthGate)
    replace_deadline_seconds: int = Field(600, ge=10, le=7200, description="per batch, for replacements")


class RefreshReport(BaseModel):
    group: str
    method: Literal["aws", "replace", "nothing to do"]
    image_id: str
    batches: list[list[str]] = Field(default_factory=list, description="instances replaced, per batch")
    instances: dict[str, str] = Field(default_factory=dict, description="instance id -> AMI, at the end")


def _unhealthy(ec2, new: list[Member], gate: HealthGate) -> dict[str, str]:  # noqa: ANN001 - boto3 client
    """Per failing instance, why; waits up to the gate's deadline for all of them to pass."""
    end = time.monotonic() + gate.deadline_seconds
    while True:
        failing: dict[str, str] = {}
        if gate.check in ("ec2", "both"):
            failing.update(
                {k: v for k, v in refresh.instance_status(ec2, [m.instance_id for m in new]).items() if v}
            )
        if gate.check in ("http", "both"):
            for member in new:
                url = (gate.url_template or "").format(
                    private_ip=member.private_ip, instance_id=member.instance_id
                )
                ok, detail = http_ok(url)
                if not ok:
                    failing[member.instance_id] = f"{url}: {detail}"
        if not failing or time.monotonic() >= end:
            return failing
        time.sleep(2)


def _replace_in_batches(
    autoscaling: Any,  # boto3 clients
    ec2: Any,
    group: str,
    image_id: str,
    spec: RefreshSpec,
    progress_id: UUID,
) -> list[list[str]]:
    log = default_logger()
    before = refresh.members(autoscaling, ec2, group)
    stale = [m.instance_id for m in before if not spec.preferences.skip_matching or m.image_id != image_id]
    size = refresh.batch_size(
        refresh.desired_capacity(autoscaling, group), spec.preferences.min_healthy_percentage
    )
    batches = [stale[i : i + size] for i in range(0, len(stale), size)]
    known = {m.instance_id for m in before}
    for number, batch in enumerate(batches, 1):
        log.info("batch %d/%d of %s: replacing %s", number, len(batches), group, ", ".join(batch))
        for instance_id in batch:
            refresh.terminate(autoscaling, instance_id)
        try:
            on_image = refresh.wait_for_replacements(
                autoscaling, ec2, group, set(batch), image_id, spec.replace_deadline_seconds
            )
        except TimeoutError as exc:
            raise InstanceRefreshFailed(f"batch {number}/{len(batches)} of {group}: {exc}") from None
        new = [m for m in on_image if m.instance_id not in known]
        known |= {m.instance_id for m in new}
        time.sleep(spec.preferences.instance_warmup_seconds)
        failing = _unhealthy(ec2, new, spec.health) if spec.health.check != "none" else {}
        if failing:
            reasons = "; ".join(f"{k}: {v}" for k, v in failing.items())
            raise InstanceRefreshFailed(
                f"batch {number}/{len(batches)} of {group} failed its health gate: {reasons}",
                hint="the rollout moves the launch template back and replaces the instances again",
            )
        log.info(
            "batch %d/%d: %s in service on %s and healthy",
            number,
            len(batches),
            ", ".join(m.instance_id for m in new),
            image_id,
        )
        update_progress_artifact(progress_id, progress=100 * number / len(batches))
    return batches


def _refresh_on_aws(
    autoscaling: Any,  # boto3 clients
    ec2: Any,
    group: str,
    image_id: str,
    spec: RefreshSpec,
    refresh_id: str,
    progress_id: UUID,
) -> None:
    log = default_logger()
    checked: set[str] = set()
    while True:
        now = refresh.status(autoscaling, group, refresh_id)
        update_progress_artifact(progress_id, progress=now.percentage)
        log.info(
            "instance refresh %s: %s, %d%%, %s left",
            refresh_id,
            now.status,
            now.percentage,
            now.instances_to_update,
        )
        new = [
            m
            for m in refresh.members(autoscaling, ec2, group)
            if m.image_id == image_id
            and m.lifecycle_state == refresh.IN_SERVICE
            and m.instance_id not in checked
        ]
        failing = _unhealthy(ec2, new, spec.health) if new and spec.health.check != "none" else {}
        if failing:
            refresh.cancel(autoscaling, group)
            reasons = "; ".join(f"{k}: {v}" for k, v in failing.items())
            raise InstanceRefreshFailed(
                f"instance refresh {refresh_id} of {group} at {now.percentage}%: health gate: {reasons}"
            )
        checked |= {m.instance_id for m in new}
        if now.done:
            if now.status != "Successful":
                raise InstanceRefreshFailed(
                    f"instance refresh {refresh_id} of {group} ended {now.status}: {now.reason}"
                )
            return
        time.sleep(5)


@task(name="refresh-instances", cache_policy=NO_CACHE)
def refresh_instances(
    group: str,
    launch_template_id: str,
    version: str,
    image_id: str,
    spec: RefreshSpec,
    aws_block: str = AWS_BLOCK,
) -> RefreshReport:
    """Every instance of `group` on `image_id` (launch template `version`), batch by batch, each healthy."""
    log = default_logger()
    autoscaling, ec2 = clients(aws_block, "autoscaling", "ec2")
    stale = [m for m in refresh.members(autoscaling, ec2, group) if m.image_id != image_id]
    if not stale and spec.preferences.skip_matching:
        log.info("every instance of %s already runs %s", group, image_id)
        return RefreshReport(
            group=group,
            method="nothing to do",
            image_id=image_id,
            instances=_instances(autoscaling, ec2, group),
        )
    progress_id = create_progress_artifact(
        progress=0.0,
        key=f"instance-refresh-{group}".lower()[:100],
        description=f"instances of {group} on {image_id}",
    )
    request = refresh.refresh_request(group, launch_template_id, version, spec.preferences)
    refresh_id = refresh.start(autoscaling, request)
    if refresh_id is not None:
        log.info("instance refresh %s of %s started (AWS)", refresh_id, group)
        _refresh_on_aws(autoscaling, ec2, group, image_id, spec, refresh_id, progress_id)
        method, batches = "aws", []
    else:
        log.info(
            "the endpoint does not implement instance refresh: replacing the instances of %s in batches",
            group,
        )
        batches = _replace_in_batches(autoscaling, ec2, group, image_id, spec, progress_id)
        method = "replace"
    update_progress_artifact(progress_id, progress=100.0)
    return RefreshReport(
        group=group,
        method=method,
        image_id=image_id,
        batches=batches,
        instances=_instances(autoscaling, ec2, group),
    )


def _instances(autoscaling, ec2, group: str) -> dict[str, str]:  # noqa: ANN001
    return {m.instance_id: m.image_id or "?" for m in refresh.members(autoscaling, ec2, group)}


@task(name="instances-behind", cache_policy=NO_CACHE)
def instances_behind(groups: list[AutoScalingGroupFacts], aws_block: str = AWS_BLOCK) -> list[str]:
    """Each instance that does not run the image of the launch template version its group uses, as a
    sentence (detect-drift reports them: a rollout whose instance refresh did not finish)."""
    autoscaling, ec2 = clients(aws_block, "autoscaling", "ec2")
    behind: list[str] = []
    for group in groups:
        if not group.launch_template_id:
            continue
        version = group.launch_template_version or "$Default"
        image = template_image(ec2, group.launch_template_id, version)
        for member in refresh.members(autoscaling, ec2, group.name):
            if image and member.image_id != image:
                behind.append(
                    f"{group.name}: {member.instance_id} runs {member.image_id}, its launch template "
                    f"{group.launch_template_id} ({version}) uses {image}"
                )
    return behind
