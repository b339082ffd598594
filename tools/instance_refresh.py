"""Replacing an auto scaling group's running instances with its launch template's current version.

On AWS: the Auto Scaling instance refresh API (`start_instance_refresh`: rolling, minimum healthy
percentage, warm-up, skip matching, checkpoints), polled with `describe_instance_refreshes`, cancelled
with `cancel_instance_refresh`. Where the endpoint does not implement it (moto answers with an HTML
error page, other emulators with `NotImplemented`), `unsupported()` says so and the caller replaces the
instances itself with the same calls a person would make: terminate one batch inside the group keeping
its desired capacity (`terminate_instance_in_auto_scaling_group`, no decrement), then wait until the
replacements are InService on the new image (`describe_auto_scaling_groups`, `describe_instances`).

Which instance runs what is read from EC2 (each instance's image id): the group's own per-instance
launch template version is not reported by every endpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError
from pydantic import BaseModel, Field

from tools.aws import call
from tools.errors import AwsError

UNSUPPORTED_CODES = frozenset(
    {"NotImplemented", "NotImplementedException", "InvalidAction", "UnknownOperation"}
)
IN_SERVICE = "InService"
IN_PROGRESS = "InstanceRefreshInProgress"


class Preferences(BaseModel):
    """How a refresh proceeds (the AWS API's preferences, also used by the fallback)."""

    min_healthy_percentage: int = Field(66, ge=0, le=100)
    instance_warmup_seconds: int = Field(0, ge=0, le=3600)
    skip_matching: bool = True
    checkpoint_percentages: list[int] = Field(default_factory=list, max_length=10)
    checkpoint_delay_seconds: int = Field(0, ge=0, le=172800)


class Member(BaseModel):
    """One instance of the group, as EC2 and Auto Scaling see it."""

    instance_id: str
    image_id: str | None = None
    private_ip: str | None = None
    lifecycle_state: str = ""
    health_status: str = ""


class RefreshStatus(BaseModel):
    refresh_id: str
    status: str
    percentage: int = 0
    instances_to_update: int | None = None
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.status in ("Successful", "Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed")


def refresh_request(group: str, launch_template_id: str, version: str, prefs: Preferences) -> dict[str, Any]:
    """The `start_instance_refresh` arguments: a rolling refresh to this launch template version. Rollback
    is ours (the previous launch template version and AMI), so AWS's auto rollback stays off."""
    preferences: dict[str, Any] = {
        "MinHealthyPercentage": prefs.min_healthy_percentage,
        "InstanceWarmup": prefs.instance_warmup_seconds,
        "SkipMatching": prefs.skip_matching,
        "AutoRollback": False,
    }
    if prefs.checkpoint_percentages:
        points = sorted(set(prefs.checkpoint_percentages))
        if points[-1] != 100:
            points.append(100)  # AWS requires the last checkpoint to be 100
        preferences["CheckpointPercentages"] = points
        preferences["CheckpointDelay"] = prefs.checkpoint_delay_seconds
    return {
        "AutoScalingGroupName": group,
        "Strategy": "Rolling",
        "DesiredConfiguration": {
            "LaunchTemplate": {"LaunchTemplateId": launch_template_id, "Version": str(version)}
        },
        "Preferences": preferences,
    }


def unsupported(exc: BaseException) -> bool:
    """True when the endpoint does not implement the instance refresh API (only then the fallback runs):
    a `NotImplemented`-style error code or HTTP 501, or a non-API HTML error page (moto's server)."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err.get("Code") in UNSUPPORTED_CODES or status == 501
    if isinstance(exc, ResponseParserError):
        text = str(exc).lower()
        return "invalid xml received" in text and "<html" in text
    return False


def start(autoscaling: Any, request: dict[str, Any]) -> str | None:
    """Start the refresh; its id, or None when the endpoint does not implement the API.

    A refresh started by a run that was cancelled goes on without it: AWS then answers
    InstanceRefreshInProgress. If that refresh targets the same launch template version, its id is
    returned and the caller follows it; one to another version, or one being cancelled, keeps the error."""
    try:
        started = call("start_instance_refresh", autoscaling.start_instance_refresh, **request)
        return started["InstanceRefreshId"]
    except AwsError as exc:
        cause = exc.__cause__
        if cause is not None and unsupported(cause):
            return None
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == IN_PROGRESS:
            running = same_refresh_running(autoscaling, request)
            if running is not None:
                return running
        raise


def same_refresh_running(autoscaling: Any, request: dict[str, Any]) -> str | None:
    """The id of the group's pending or running refresh to the same launch template version, if any."""
    wanted = request["DesiredConfiguration"]["LaunchTemplate"]
    found = call(
        "describe_instance_refreshes",
        autoscaling.describe_instance_refreshes,
        AutoScalingGroupName=request["AutoScalingGroupName"],
    )["InstanceRefreshes"]
    for item in found:
        target = (item.get("DesiredConfiguration") or {}).get("LaunchTemplate") or {}
        if (
            item.get("Status") in ("Pending", "InProgress")
            and target.get("LaunchTemplateId") == wanted["LaunchTemplateId"]
            and str(target.get("Version")) == str(wanted["Version"])
        ):
            return item["InstanceRefreshId"]
    return None


def instance_status(ec2: Any, instance_ids: list[str]) -> dict[str, str]:
    """Per instance: "" when EC2 says it runs and passes its instance and system status checks, otherwise
    what is wrong (state or failed check)."""
    reply = call(
        "describe_instance_status",
        ec2.describe_instance_status,
        InstanceIds=instance_ids,
        IncludeAllInstances=True,
    )
    found = {s["InstanceId"]: s for s in reply.get("InstanceStatuses") or []}
    result = {}
    for instance_id in instance_ids:
        item = found.get(instance_id)
        if item is None:
            result[instance_id] = "not reported by EC2"
            continue
        state = item.get("InstanceState", {}).get("Name")
        checks = {k: (item.get(k) or {}).get("Status") for k in ("InstanceStatus", "SystemStatus")}
        bad = [f"{k} {v}" for k, v in checks.items() if v not in ("ok", None)]
        result[instance_id] = "" if state == "running" and not bad else ", ".join([f"state {state}", *bad])
    return result


def status(autoscaling: Any, group: str, refresh_id: str) -> RefreshStatus:
    found = call(
        "describe_instance_refreshes",
        autoscaling.describe_instance_refreshes,
        AutoScalingGroupName=group,
        InstanceRefreshIds=[refresh_id],
    )["InstanceRefreshes"]
    item = found[0] if found else {"Status": "Unknown"}
    return RefreshStatus(
        refresh_id=refresh_id,
        status=item.get("Status", "Unknown"),
        percentage=item.get("PercentageComplete") or 0,
        instances_to_update=item.get("InstancesToUpdate"),
        reason=item.get("StatusReason", ""),
    )


def cancel(autoscaling: Any, group: str) -> None:
    call("cancel_instance_refresh", autoscaling.cancel_instance_refresh, AutoScalingGroupName=group)


# --- the fallback: batches replaced with plain calls --------------------------------------------------


def members(autoscaling: Any, ec2: Any, group: str) -> list[Member]:
    """The group's instances with their image and private address (terminated ones left out)."""
    groups = call(
        "describe_auto_scaling_groups",
        autoscaling.describe_auto_scaling_groups,
        AutoScalingGroupNames=[group],
    )["AutoScalingGroups"]
    if not groups:
        return []
    states = {i["InstanceId"]: i for i in groups[0].get("Instances") or []}
    if not states:
        return []
    found: list[Member] = []
    reply = call("describe_instances", ec2.describe_instances, InstanceIds=sorted(states))
    for reservation in reply["Reservations"]:
        for inst in reservation["Instances"]:
            if inst["State"]["Name"] in ("shutting-down", "terminated"):
                continue
            state = states[inst["InstanceId"]]
            found.append(
                Member(
                    instance_id=inst["InstanceId"],
                    image_id=inst.get("ImageId"),
                    private_ip=inst.get("PrivateIpAddress"),
                    lifecycle_state=state.get("LifecycleState", ""),
                    health_status=state.get("HealthStatus", ""),
                )
            )
    return sorted(found, key=lambda m: m.instance_id)


def desired_capacity(autoscaling: Any, group: str) -> int:
    groups = call(
        "describe_auto_scaling_groups",
        autoscaling.describe_auto_scaling_groups,
        AutoScalingGroupNames=[group],
    )["AutoScalingGroups"]
    return int(groups[0]["DesiredCapacity"]) if groups else 0


def batch_size(desired: int, min_healthy_percentage: int) -> int:
    """How many instances may be out of service at once while `min_healthy_percentage` stay healthy."""
    keep = math.ceil(desired * min_healthy_percentage / 100)
    return max(1, desired - keep)


def terminate(autoscaling: Any, instance_id: str) -> None:
    """Terminate one instance inside its group; the group launches its replacement (no decrement)."""
    call(
        "terminate_instance_in_auto_scaling_group",
        autoscaling.terminate_instance_in_auto_scaling_group,
        InstanceId=instance_id,
        ShouldDecrementDesiredCapacity=False,
    )


def wait_for_replacements(
    autoscaling: Any,
    ec2: Any,
    group: str,
    gone: set[str],
    image_id: str,
    deadline_seconds: float,
    poll_seconds: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[Member]:
    """Wait until none of `gone` is in the group and it has its desired capacity InService; returns the
    members on `image_id` that were not there before. TimeoutError naming what is missing otherwise."""
    end = clock() + deadline_seconds
    while True:
        now = members(autoscaling, ec2, group)
        desired = desired_capacity(autoscaling, group)
        in_service = [m for m in now if m.lifecycle_state == IN_SERVICE]
        left = [m.instance_id for m in now if m.instance_id in gone]
        if not left and len(in_service) >= desired:
            return [m for m in in_service if m.image_id == image_id]
        if clock() >= end:
            raise TimeoutError(
                f"after {deadline_seconds:.0f}s {group} has {len(in_service)}/{desired} instances InService"
                + (f", still running {', '.join(left)}" if left else "")
            )
        time.sleep(poll_seconds)
