"""Fault: the flow process of an apply-stack run is SIGKILLed (worker host lost) while its `terraform
apply` runs. Terraform goes on (its own session; its output goes to files, not pipes) and keeps writing
the state. The next run of the stack, once it holds the stack's slot (the dead run's slot lease expires
first), finds that terraform working on the stack's state and waits for it, logging its pid, instead of
starting a second apply beside it; after it exits the run converges. Afterwards: no terraform process
left, the lock free, and the state's launch template version equal to AWS's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import boto3
import pytest

from blocks import TerraformBackend
from tests.conftest import read_flow_run_logs
from tests.reliability.helpers import wait_for
from tools import terraform as tf
from tools.settings import REPO_ROOT

pytestmark = pytest.mark.reliability
STACK = "scalac/internal-prod/xwiki"
MOTO_AMI = "ami-12c6146b"
HOLD_SECONDS = 100  # longer than the dead run's slot lease (60 s) and its reclaim
SCRIPT = (
    "import json, sys\\n"
    "from flows.apply import apply_stack\\n"
    "apply_stack(request=json.loads(sys.argv[1]), backend_block=sys.argv[2])\\n"
)


def test_a_dead_runs_terraform_is_waited_for_and_the_next_apply_converges(blocks, sandbox_env, workdir):  # noqa: ANN001
    from flows.apply import apply_stack
    from tasks.terraform import destroy_now

    uid = uuid.uuid4().hex[:10]
    block = f"rel-deadtf-{uid}"
    TerraformBackend(
        bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
        region="eu-central-1",
        key_prefix=f"rel/{uid}/",
        endpoint_url=sandbox_env["AWS_ENDPOINT_URL"],
        lock_timeout_seconds=5,
        running_wait_seconds=300,
    ).save(block, overwrite=True)
    key = f"rel/{uid}/{STACK}/terraform.tfstate"
    bucket = sandbox_env["DEVOPS_TF_STATE_BUCKET"]
    s3, ec2 = (
        boto3.client(s, endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="eu-central-1")
        for s in ("s3", "ec2")
    )
    name = f"xw-deadtf-{uid}"
    variables = {"name": name, "ami_id": MOTO_AMI, "apply_hold_seconds": str(HOLD_SECONDS)}

    def lock_exists() -> bool:
        return bool(s3.list_objects_v2(Bucket=bucket, Prefix=f"{key}.tflock").get("Contents"))

    def templates() -> list[dict]:
        found = ec2.describe_launch_templates()["LaunchTemplates"]
        return [t for t in found if t["LaunchTemplateName"].startswith(f"lt-{name}")]

    def applies() -> list[tf.TerraformProcess]:
        return [p for p in tf.state_writers(STACK, key) if "apply" in p.argv]

    most = [0]
    stop = threading.Event()

    def sample() -> None:  # never two applies on the state at once
        while not stop.is_set():
            most[0] = max(most[0], len(applies()))
            stop.wait(0.2)

    log = open(workdir / "dead-run.log", "wb")  # noqa: SIM115 - closed below
    request = {"stack": STACK, "variables": variables}
    flow = subprocess.Popen(  # noqa: S603 - the dead run: a flow process of its own
        [sys.executable, "-c", SCRIPT, json.dumps(request), block],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:

        def applying() -> list[tf.TerraformProcess] | None:
            assert flow.poll() is None, (workdir / "dead-run.log").read_text()[-3000:]
            return applies() if lock_exists() and templates() else None

        running = wait_for(applying, 240, "the dead run's apply", 0.5)
        os.kill(flow.pid, signal.SIGKILL)  # the worker host is lost: the flow process dies at once
        flow.wait(timeout=30)
        assert all(p.pid != flow.pid for p in running) and applies(), "terraform died with its flow process"
        dead_terraform = running[0].pid

        state = apply_stack(
            request={"stack": STACK, "variables": {**variables, "apply_hold_seconds": "0"}},
            backend_block=block,
            return_state=True,
        )
        outcome = state.result()
        assert outcome.reason == "applied", outcome
        logs = read_flow_run_logs(state.state_details.flow_run_id)
        waited = [
            m for m in logs if m.startswith("waiting for a terraform process") and str(dead_terraform) in m
        ]
        assert waited, logs
        assert not tf.state_writers(STACK, key) and not lock_exists()
        assert most[0] == 1  # the next run never ran its apply beside the dead run's
        doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        (lt_state,) = [r for r in doc["resources"] if r["type"] == "aws_launch_template"]
        (aws_lt,) = templates()
        assert lt_state["instances"][0]["attributes"]["latest_version"] == aws_lt["LatestVersionNumber"]
        assert lt_state["instances"][0]["attributes"]["id"] == aws_lt["LaunchTemplateId"]  # no duplicate
        assert not [r for r in doc["resources"] if r["type"] == "terraform_data"]
    finally:
        stop.set()
        if flow.poll() is None:
            os.kill(flow.pid, signal.SIGKILL)
            flow.wait(timeout=30)
        log.close()
        wait_for(lambda: not applies() or None, HOLD_SECONDS + 60, "the dead run's terraform to exit", 1)
        destroy_now(STACK, {**variables, "apply_hold_seconds": "0"}, block)
    assert not templates()
