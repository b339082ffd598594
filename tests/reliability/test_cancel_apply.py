"""Fault: a flow run cancelled (through the API, as a person in the UI would) while `terraform apply`
runs and holds the S3 state lock. Prefect's runner SIGTERMs the flow process; our process runner sends
Terraform SIGINT first, so it stops, writes its state and releases the lock. Nothing is left running,
the lock is gone, and the next run of the same stack succeeds."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.blocks import save_backend
from tests.integration.flows_for_tests import served_run
from tests.reliability.helpers import wait_for

pytestmark = pytest.mark.reliability
STACK = "scalac/internal-prod/xwiki"
MOTO_AMI = "ami-12c6146b"  # one of moto's bundled images


def test_cancel_during_terraform_apply_releases_the_lock_and_the_next_run_succeeds(
    blocks,
    sandbox_env,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    from flows.apply import apply_stack
    from tools import terraform as tf

    uid = uuid.uuid4().hex[:10]
    backend_block = f"rel-cancel-{uid}"
    save_backend(sandbox_env, backend_block, f"rel/{uid}/")
    state_key = f"rel/{uid}/{STACK}/terraform.tfstate"
    s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="eu-central-1")
    bucket = sandbox_env["DEVOPS_TF_STATE_BUCKET"]

    def lock_exists() -> bool:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{state_key}.tflock").get("Contents", [])
        return bool(listed)

    variables = {"name": f"xwiki-cancel-{uid}", "ami_id": MOTO_AMI, "apply_hold_seconds": "600"}
    parameters = {"request": {"stack": STACK, "variables": variables}, "backend_block": backend_block}
    with served_run("apply-for-tests", mode="apply", parameters=parameters) as run:

        def applying():
            live = [
                p
                for p in tf.live_terraform_processes(STACK)
                if p.state_key == state_key and "apply" in p.argv
            ]
            return live if live and lock_exists() else None

        wait_for(applying, 300, "terraform apply holding the state lock", interval=0.5)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(), force=True)

            def cancelled():
                state = client.read_flow_run(run.id).state
                return state if state and state.type == StateType.CANCELLED else None

            wait_for(cancelled, 120, "the run to be cancelled", interval=0.5)

    wait_for(
        lambda: not [p for p in tf.live_terraform_processes(STACK) if p.state_key == state_key] or None,
        60,
        "terraform to exit",
        interval=0.5,
    )
    assert not lock_exists(), "the cancelled apply left its state lock behind"

    again = apply_stack(
        request={"stack": STACK, "variables": {**variables, "apply_hold_seconds": "0"}},
        backend_block=backend_block,
    )
    assert again.stack == STACK and again.reason in {"applied", "no changes"}
    assert not lock_exists()
