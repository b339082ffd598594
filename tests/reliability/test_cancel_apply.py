"""Fault: a flow run cancelled (through the API, as a person in the UI would) while `terraform apply`
runs and holds the S3 state lock, on each of apply-stack's paths: the saved-plan apply (the xwiki stack:
it has policies) and the one-process `terraform apply -json` (sandbox/direct: no policies). Prefect's
runner SIGTERMs the flow process; our process runner sends Terraform one SIGINT, so it stops, writes its
state and releases the lock. Nothing is left running, the lock is gone, the state equals AWS, and the
next run of the same stack succeeds and the one after it converges."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.blocks import save_backend
from tests.conftest import read_flow_run_logs
from tests.integration.flows_for_tests import served_run
from tests.reliability.helpers import wait_for
from tests.reliability.invariants import Stack

pytestmark = pytest.mark.reliability
MOTO_AMI = "ami-12c6146b"  # one of moto's bundled images
PATHS = {
    "saved-plan": ("scalac/internal-prod/xwiki", {"ami_id": MOTO_AMI}),
    "one-process": ("sandbox/direct", {}),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_cancel_during_terraform_apply_releases_the_lock_and_the_next_run_succeeds(
    blocks, sandbox_env, path: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    from flows.apply import apply_stack
    from tasks.terraform_destroy import destroy_now
    from tools import terraform as tf

    stack_path, extra = PATHS[path]
    uid = uuid.uuid4().hex[:10]
    backend_block = f"rel-cancel-{uid}"
    save_backend(sandbox_env, backend_block, f"rel/{uid}/")

    def client(service: str):
        return boto3.client(service, endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="eu-central-1")

    stack = Stack(
        s3=client("s3"),
        ec2=client("ec2"),
        autoscaling=client("autoscaling"),
        bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
        state_key=f"rel/{uid}/{stack_path}/terraform.tfstate",
    )
    variables = {"name": f"cancel-{path}-{uid}", **extra, "apply_hold_seconds": "600"}
    settled = {**variables, "apply_hold_seconds": "0"}
    parameters = {"request": {"stack": stack_path, "variables": variables}, "backend_block": backend_block}
    try:
        with served_run("apply-for-tests", mode="apply", parameters=parameters) as run:

            def applying():
                live = [
                    p
                    for p in tf.live_terraform_processes(stack_path)
                    if p.state_key == stack.state_key and "apply" in p.argv
                ]
                return live if live and stack.lock_exists() else None

            terraform = wait_for(applying, 300, "terraform apply holding the state lock", interval=0.5)[0]
            assert ("-json" in terraform.argv) == (path == "one-process"), terraform.argv
            with get_client(sync_client=True) as api:
                api.set_flow_run_state(run.id, Cancelling(), force=True)

                def cancelled():
                    state = api.read_flow_run(run.id).state
                    return state if state and state.type == StateType.CANCELLED else None

                wait_for(cancelled, 120, "the run to be cancelled", interval=0.5)
                [child] = api.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])
                    )
                )
            assert any(m.startswith(f"{path} apply: ") for m in read_flow_run_logs(child.id))

        wait_for(
            lambda: (
                not [p for p in tf.live_terraform_processes(stack_path) if p.state_key == stack.state_key]
                or None
            ),
            60,
            "terraform to exit",
            interval=0.5,
        )
        assert not stack.lock_exists(), "the cancelled apply left its state lock behind"
        assert stack.state_vs_aws() == [], stack.state_vs_aws()

        again = apply_stack(request={"stack": stack_path, "variables": settled}, backend_block=backend_block)
        assert again.stack == stack_path and again.reason in {"applied", "no changes"}, again.reason
        assert not stack.lock_exists() and stack.state_vs_aws() == []
        last = apply_stack(request={"stack": stack_path, "variables": settled}, backend_block=backend_block)
        assert last.reason == "converged", last.reason
    finally:
        destroy_now(stack_path, settled, backend_block)
