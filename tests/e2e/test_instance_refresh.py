"""ami-rollout reaches the running servers: the ASG's instances replaced in batches against moto (which
lacks AWS's instance refresh API, so the flow's own batches run: real terminate and describe calls), with
the real Packer and Terraform; a failed health gate puts the launch template and every instance back."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from blocks import AWS_BLOCK
from flows.bake import BakeSpec
from flows.detect_drift import StackCheck, detect_drift
from flows.rollout import RolloutRequest, ami_rollout
from tasks.instance_refresh import HealthGate, RefreshSpec
from tasks.terraform_destroy import destroy_now
from tools.errors import RolloutFailed

pytestmark = pytest.mark.e2e
STACK = "scalac/internal-prod/xwiki"


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _images(autoscaling, ec2, group: str) -> dict[str, str]:
    ids = [
        i["InstanceId"]
        for i in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][
            0
        ]["Instances"]
    ]
    reply = ec2.describe_instances(InstanceIds=ids)
    return {
        i["InstanceId"]: i["ImageId"]
        for r in reply["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("shutting-down", "terminated")
    }


def test_rollout_replaces_instances_in_batches_and_a_failed_gate_puts_everything_back(
    backend_block, ec2, sandbox_env
):
    name = f"xwiki-{uuid.uuid4().hex[:8]}"
    env_tag = f"e2e-{uuid.uuid4().hex[:6]}"
    autoscaling = boto3.client("autoscaling", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    request = RolloutRequest(
        bake=BakeSpec(host="xwiki", environment=env_tag), stack=STACK, variables={"name": name}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        first = ami_rollout(request, backend_block, AWS_BLOCK)
        ami1 = first.bake.ami_id
        original = _images(autoscaling, ec2, name)
        assert len(original) == 3 and set(original.values()) == {ami1}  # the sandbox's ASG of 3
        assert first.instances.method == "nothing to do" and first.instances.instances == original

        # a new AMI: every instance replaced, one batch at a time (66 % stay healthy: 1 of 3 per batch)
        second = ami_rollout(
            request.model_copy(update={"bake": BakeSpec(host="xwiki", environment=env_tag + "-b")}),
            backend_block,
            AWS_BLOCK,
        )
        ami2 = second.bake.ami_id
        report = second.instances
        assert report.method == "replace" and report.image_id == ami2
        assert [len(b) for b in report.batches] == [1, 1, 1]
        assert sorted(i for b in report.batches for i in b) == sorted(original)
        now = _images(autoscaling, ec2, name)
        assert len(now) == 3 and set(now.values()) == {ami2} and not set(now) & set(original)
        assert report.instances == now

        # an instance on another image in the group (a refresh that did not finish): detect-drift says so
        stray = ec2.run_instances(ImageId=ami1, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        autoscaling.attach_instances(InstanceIds=[stray], AutoScalingGroupName=name)
        drift = detect_drift(
            stacks=[StackCheck(stack=STACK)],
            servers=None,
            fail_on_drift=False,
            notify_block=None,
            backend_block=backend_block,
        )
        assert [line for line in drift.instances_behind if stray in line] == [
            f"{name}: {stray} runs {ami1}, its launch template {second.verified.launch_template_id} "
            f"($Latest) uses {ami2}"
        ], drift.instances_behind
        assert drift.has_drift and "not on their launch template's image" in drift.summary()
        autoscaling.detach_instances(
            InstanceIds=[stray], AutoScalingGroupName=name, ShouldDecrementDesiredCapacity=True
        )
        ec2.terminate_instances(InstanceIds=[stray])

        # the new AMI fails the health gate: the first batch stops the rollout; the launch template goes
        # back to ami2 and the instance already replaced is replaced again, onto ami2
        gate = HealthGate(
            check="http",
            url_template=f"http://127.0.0.1:{server.server_port}/health?ip={{private_ip}}",
            deadline_seconds=3,
        )
        failing = request.model_copy(
            update={
                "bake": BakeSpec(host="xwiki", environment=env_tag + "-c"),
                "refresh": RefreshSpec(health=gate),
            }
        )
        state = ami_rollout(failing, backend_block, AWS_BLOCK, return_state=True)
        assert state.is_failed()
        with pytest.raises(RolloutFailed) as caught:
            state.result()
        message = str(caught.value)
        assert "batch 1/3" in message and "health gate" in message and "HTTP 500" in message, message
        assert f"rolled back to the previous AMI {ami2}" in message, message
        after = _images(autoscaling, ec2, name)
        assert len(after) == 3 and set(after.values()) == {ami2}, after
        lt_id = second.verified.launch_template_id
        versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
        latest = max(versions, key=lambda v: v["VersionNumber"])
        assert latest["LaunchTemplateData"]["ImageId"] == ami2
    finally:
        server.shutdown()
        destroy_now(STACK, {"name": name, "ami_id": "ami-00000000"}, backend_block, AWS_BLOCK)
