"""Faults of the instance refresh (issue 18), on a real served ami-rollout against moto through the proxy
of tests/reliability/slow_moto.py:

- cancelled through the Prefect API while the first batch's TerminateInstanceInAutoScalingGroup is in
  flight: no change starts after the cancel (no rollback apply in the dying process), the invariants
  hold (no tool left, lock free, state equals AWS), the launch template stays on the new AMI, the group
  is at its desired capacity with every instance on the old or the new AMI and every original instance
  accounted for; the rerun reuses the bake, is converged, and replaces exactly the instances still on the
  old AMI;
- a health gate that fails on the next AMI: the run ends Failed, the failure alert of the server's
  automation reaches a local webhook naming the batch and the AMI rolled back to, and every instance and
  the launch template are back on the previous AMI.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import kill_points as kp
from tests.reliability.helpers import wait_for

pytestmark = pytest.mark.reliability
INSTANCE_TYPE = "t3.small"


class _Hooks(BaseHTTPRequestHandler):
    """The alerts webhook (POSTs recorded) and a health URL that always fails (GET: HTTP 500)."""

    received: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hooks.received.append(json.loads(body or b"{}").get("text", ""))
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hooks() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _group(ctx: kp.Setup) -> tuple[int, dict[str, tuple[str, str]]]:
    """Desired capacity, and instance id -> (lifecycle state, AMI) of the group's live instances."""
    group = ctx.stack.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[f"kp-{ctx.uid}"])[
        "AutoScalingGroups"
    ][0]
    states = {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}
    images = {}
    if states:
        for reservation in ctx.stack.ec2.describe_instances(InstanceIds=sorted(states))["Reservations"]:
            for inst in reservation["Instances"]:
                if inst["State"]["Name"] not in ("shutting-down", "terminated"):
                    images[inst["InstanceId"]] = (states[inst["InstanceId"]], inst["ImageId"])
    return group["DesiredCapacity"], images


def _terminated(ctx: kp.Setup, instance_ids: list[str]) -> set[str]:
    reply = ctx.stack.ec2.describe_instances(InstanceIds=instance_ids)
    return {
        i["InstanceId"]
        for r in reply["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] in ("shutting-down", "terminated")
    }


def _run(deployment: str, ctx: kp.Setup, request: Any) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(
        deployment,
        parameters={
            "request": request.model_dump(mode="json"),
            "backend_block": ctx.backend_block,
            "aws_block": ctx.aws_block,
        },
        timeout=0,
    )


def _final_state(run_id: Any, seconds: float) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        wait_for(lambda: client.read_flow_run(run_id).state.is_final(), seconds, "the run to end", interval=1)
        return client.read_flow_run(run_id).state


def _deregister(ctx: kp.Setup, environments: list[str]) -> None:
    ec2 = ctx.stack.ec2
    found = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:environment", "Values": environments}]
    )
    for image in found["Images"]:
        ec2.deregister_image(ImageId=image["ImageId"])


def test_refresh_cancelled_mid_batch_then_rerun_and_a_failed_gate_alerts(
    blocks, sandbox_env, workdir: Path, hooks: str
) -> None:
    from blocks import NOTIFY_BLOCK, slack_webhook
    from deployments.setup import ensure_failure_automation
    from flows.bake import BakeSpec
    from flows.rollout import ami_rollout
    from tasks.instance_refresh import HealthGate, RefreshSpec
    from tests.reliability.test_rollout_kill_points_cancel import _cancel

    with kp.setup(sandbox_env, workdir) as ctx, kp.served(ctx, workdir / "served.log") as deployment:
        try:
            first = ami_rollout(ctx.request(INSTANCE_TYPE), ctx.backend_block, ctx.aws_block)
            ami1 = first.bake.ami_id
            desired, original = _group(ctx)
            assert desired == 3 and {image for _, image in original.values()} == {ami1}, original

            # the cancel, while the first batch's terminate call is held by the proxy
            second = ctx.request(INSTANCE_TYPE).model_copy(
                update={"bake": BakeSpec(host="xwiki", environment=f"{ctx.env_tag}-b")}
            )
            seen = ctx.proxy.delay("TerminateInstanceInAutoScalingGroup", 20)
            run = _run(deployment, ctx, second)
            try:
                wait_for(seen.is_set, 600, "the first batch's terminate call", interval=0.2)
                _cancel(run.id)
            finally:
                ctx.proxy.clear()
            kp.wait_no_tools(ctx.run_tmp, 120)
            assert not ctx.stack.lock_exists(), "the cancelled run left its lock"
            assert ctx.stack.state_vs_aws() == [], "state and AWS differ after the cancel"
            ami2 = ctx.stack.latest_image()
            assert ami2 != ami1, "the cancel rolled the launch template back (a change after the cancel)"

            def settled() -> bool:
                want, now = _group(ctx)
                return len(now) == want and all(state == "InService" for state, _ in now.values())

            wait_for(settled, 120, "the group back at its desired capacity, all InService", interval=1)
            desired, after = _group(ctx)
            assert {image for _, image in after.values()} <= {ami1, ami2}, after
            gone = set(original) - set(after)
            assert not gone or _terminated(ctx, sorted(gone)) == gone, (
                "an original instance is unaccounted for"
            )
            behind = sorted(i for i, (_, image) in after.items() if image == ami1)
            ctx.note(f"after the cancel: {len(behind)} of {desired} instances still on the old AMI")

            # the rerun finishes the job: bake reused, stack converged, only the instances behind replaced
            rerun = ami_rollout(second, ctx.backend_block, ctx.aws_block)
            assert rerun.bake.reused and rerun.bake.ami_id == ami2
            assert rerun.apply.reason == "converged", rerun.apply.reason
            assert sorted(i for batch in rerun.instances.batches for i in batch) == behind
            desired, final = _group(ctx)
            assert len(final) == desired == 3 and {image for _, image in final.values()} == {ami2}, final

            # a health gate failing on the next AMI: Failed, alerted, everything back on ami2
            slack_webhook(f"{hooks}/hook").save(NOTIFY_BLOCK, overwrite=True)
            assert ensure_failure_automation()
            gate = HealthGate(
                check="http", url_template=f"{hooks}/health?ip={{private_ip}}", deadline_seconds=3
            )
            failing = second.model_copy(
                update={
                    "bake": BakeSpec(host="xwiki", environment=f"{ctx.env_tag}-c"),
                    "refresh": RefreshSpec(health=gate),
                }
            )
            run = _run(deployment, ctx, failing)
            assert _final_state(run.id, 600).is_failed()
            end = time.monotonic() + 120
            while time.monotonic() < end and not [t for t in _Hooks.received if str(run.id) in t]:
                time.sleep(0.5)
            alerts = [t for t in _Hooks.received if str(run.id) in t]
            assert alerts, f"no failure alert arrived: {_Hooks.received}"
            assert "batch 1/3" in alerts[0] and "health gate" in alerts[0], alerts[0]
            assert f"rolled back to the previous AMI {ami2}" in alerts[0], alerts[0]
            desired, back = _group(ctx)
            assert len(back) == 3 and {image for _, image in back.values()} == {ami2}, back
            assert ctx.stack.latest_image() == ami2
            assert ctx.stack.state_vs_aws() == [] and not ctx.stack.lock_exists()
            kp.wait_no_tools(ctx.run_tmp, 60)
        finally:
            _deregister(ctx, [f"{ctx.env_tag}-b", f"{ctx.env_tag}-c"])
    print("\n".join(ctx.log))
