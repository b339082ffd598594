"""What must hold after a rollout is cancelled or killed at any point (the kill-point tests check it).

- no tool process of the killed run is left (after the tool's own graceful stop, or after an orphaned
  terraform of a SIGKILLed run finished on its own): found by the run's private TMPDIR (tests/leftovers.py);
- the stack's S3 state lock is free;
- the S3 state equals AWS: the launch template's latest version and that version's image id as recorded in
  the state are what describe_launch_templates / describe_launch_template_versions say, and the auto
  scaling group uses that launch template (its latest version); a stack without a launch template
  (sandbox/direct): its security group exists with the state's name and description;
- the next rollout completes, and a further one reports `converged` (nothing left to do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import leftovers
from tests.reliability.helpers import wait_for


def tools_left(run_tmp: Path) -> list[str]:
    return [str(p) for p in leftovers.tool_processes(run_tmp)]


def wait_no_tools(run_tmp: Path, seconds: float) -> None:
    """Every tool of the run has exited (after its graceful stop / an orphan's own end)."""
    what = f"tool processes of the run to exit: {tools_left(run_tmp)}"
    wait_for(lambda: not tools_left(run_tmp), seconds, what, 0.5)


@dataclass
class Stack:
    """Where a test's stack keeps its state, and the AWS clients to compare it with."""

    s3: Any
    ec2: Any
    autoscaling: Any
    bucket: str
    state_key: str

    def lock_exists(self) -> bool:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.state_key}.tflock")
        return bool(listed.get("Contents"))

    def state(self) -> dict[str, Any] | None:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.state_key)
        if not any(o["Key"] == self.state_key for o in listed.get("Contents", [])):
            return None
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.state_key)["Body"].read())

    def _attributes(self, state: dict[str, Any], kind: str) -> dict[str, Any] | None:
        for resource in state.get("resources", []):
            if resource["type"] == kind and resource.get("mode") == "managed" and resource["instances"]:
                return resource["instances"][0]["attributes"]
        return None

    def state_vs_aws(self) -> list[str]:
        """Differences between the S3 state and AWS ([] when they agree; no state and no stack agree)."""
        state = self.state()
        lt = self._attributes(state, "aws_launch_template") if state else None
        if lt is None:
            return self._security_group_vs_aws(state) if state else []
        found = self.ec2.describe_launch_templates(LaunchTemplateIds=[lt["id"]])["LaunchTemplates"]
        if not found:
            return [f"launch template {lt['id']} of the state is not in AWS"]
        latest = found[0]["LatestVersionNumber"]
        versions = self.ec2.describe_launch_template_versions(
            LaunchTemplateId=lt["id"], Versions=[str(latest)]
        )["LaunchTemplateVersions"]
        image = versions[0]["LaunchTemplateData"].get("ImageId")
        out = []
        if lt["latest_version"] != latest:
            out.append(f"latest version: state {lt['latest_version']}, AWS {latest}")
        if lt["image_id"] != image:
            out.append(f"image of the latest version: state {lt['image_id']}, AWS {image}")
        asg = self._attributes(state, "aws_autoscaling_group") if state else None
        if asg is not None:
            groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg["name"]])
            group = groups["AutoScalingGroups"][0]["LaunchTemplate"] if groups["AutoScalingGroups"] else {}
            if group.get("LaunchTemplateId") != lt["id"]:
                out.append(f"auto scaling group {asg['name']} uses {group}, not {lt['id']}")
            elif group.get("Version") not in ("$Latest", str(latest)):
                out.append(f"auto scaling group {asg['name']} pinned to version {group.get('Version')}")
        return out

    def _security_group_vs_aws(self, state: dict[str, Any]) -> list[str]:
        """A stack without a launch template (sandbox/direct): its security group as the state has it."""
        sg = self._attributes(state, "aws_security_group")
        if sg is None:
            return []
        found = self.ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [sg["id"]]}])
        if not found["SecurityGroups"]:
            return [f"security group {sg['id']} of the state is not in AWS"]
        group = found["SecurityGroups"][0]
        if (group["GroupName"], group["Description"]) != (sg["name"], sg["description"]):
            return [f"security group {sg['id']}: state {sg['name']}/{sg['description']}, AWS {group}"]
        return []

    def latest_image(self) -> str | None:
        state = self.state()
        lt = self._attributes(state, "aws_launch_template") if state else None
        return lt["image_id"] if lt else None
