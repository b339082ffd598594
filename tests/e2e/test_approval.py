"""apply-stack with approval required, on the cheap smoke stack: the run pauses with a typed form showing
the plan; rejected or unanswered -> nothing applied; approved -> applied."""

from __future__ import annotations

import threading
import time
import uuid

import boto3
import pytest

from blocks import AWS_BLOCK, TerraformBackend
from flows.apply import StackRequest, apply_stack

pytestmark = pytest.mark.e2e
SMOKE = "sandbox/smoke"


def _groups(ec2, name):
    return [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == name]


class _Run(threading.Thread):
    """apply-stack in a thread (it blocks while paused); `state` is its final state."""

    def __init__(self, request: StackRequest, backend_block: str) -> None:
        super().__init__(daemon=True)
        self.request, self.backend_block, self.state, self.error = request, backend_block, None, None

    def run(self) -> None:
        try:
            self.state = apply_stack(self.request, self.backend_block, AWS_BLOCK, return_state=True)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc


def _paused_run(name: str, seconds: float = 240):
    """The paused apply-stack run whose request names `name`, found through the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
        for run in runs:
            if ((run.parameters.get("request") or {}).get("variables") or {}).get("name") == name:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no paused apply-stack run for {name} within {seconds}s")


def _form(run):
    from prefect.input import keyset_from_paused_state
    from prefect.input.actions import read_flow_run_input

    keys = keyset_from_paused_state(run.state)
    return read_flow_run_input(keys["schema"], run.id), read_flow_run_input(keys["description"], run.id)


def _approve(name: str, backend_block: str, answer: dict):
    from prefect.flow_runs import resume_flow_run

    request = StackRequest(
        stack=SMOKE, variables={"name": name}, approval="required", approval_timeout_seconds=600
    )
    run = _Run(request, backend_block)
    run.start()
    paused = _paused_run(name)
    schema, description = _form(paused)
    assert set(schema["properties"]) >= {"approved", "reason"}, schema
    assert schema["properties"]["approved"]["type"] == "boolean"
    assert "1 to add" in description and "aws_security_group.smoke" in description, description
    resume_flow_run(paused.id, run_input=answer)
    run.join(timeout=300)
    assert not run.is_alive() and run.error is None, run.error
    return run.state


def test_rejected_plan_applies_nothing(backend_block, ec2):
    name = f"approval-no-{uuid.uuid4().hex[:8]}"
    state = _approve(name, backend_block, {"approved": False, "reason": "not today"})
    outcome = state.result()
    assert state.is_completed() and not outcome.applied and outcome.reason == "rejected"
    assert outcome.plan.add == 1 and _groups(ec2, name) == []


def test_approved_plan_is_applied(backend_block, ec2, sandbox_env):
    name = f"approval-yes-{uuid.uuid4().hex[:8]}"
    try:
        state = _approve(name, backend_block, {"approved": True, "reason": "looks right"})
        outcome = state.result()
        assert state.is_completed() and outcome.applied and outcome.reason == "applied"
        assert [g["GroupId"] for g in _groups(ec2, name)] == [outcome.result.value("security_group_id")]
    finally:
        for group in _groups(ec2, name):
            ec2.delete_security_group(GroupId=group["GroupId"])
        backend = TerraformBackend.load(backend_block)
        s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
        s3.delete_object(Bucket=backend.bucket, Key=f"{backend.key_prefix}{SMOKE}/terraform.tfstate")


def test_no_answer_within_the_timeout_applies_nothing(backend_block, ec2):
    name = f"approval-timeout-{uuid.uuid4().hex[:8]}"
    request = StackRequest(
        stack=SMOKE, variables={"name": name}, approval="required", approval_timeout_seconds=3
    )
    state = apply_stack(request, backend_block, AWS_BLOCK, return_state=True)
    outcome = state.result()
    assert state.is_completed() and not outcome.applied and outcome.reason == "approval timed out"
    assert _groups(ec2, name) == []
