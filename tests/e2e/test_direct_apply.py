"""apply-stack's two paths against moto with the real Terraform and S3 state, on the small sandbox/direct
stack (no policies): with no approval required it plans and applies in one `terraform apply -json` (the
plan artifact, the outputs, the converged record and the audit event come from that one process, and the
next run converges); with approval required it takes the saved-plan path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import boto3
import pytest

from blocks import AWS_BLOCK, TerraformBackend
from flows.apply import StackRequest, apply_stack
from tasks.terraform_destroy import destroy_now
from tests.audit_events import audit_events
from tests.conftest import read_flow_run_logs
from tests.sshd import flow_run_artifacts

pytestmark = pytest.mark.e2e
DIRECT = "sandbox/direct"
SG = "aws_security_group.direct"


def _groups(ec2, name: str) -> list[dict]:
    return [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == name]


def _task_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [t.name for t in runs]


def _terraform_commands(logs: list[str]) -> list[str]:
    """The Terraform sub-commands the run started on the stack's state (the runner logs `$ <argv>`): not the
    pre-flight's (version, `init -backend=false`, validate), which runs only when these exact files have
    not passed it within a day, so its commands depend on what ran before."""
    argvs = [line.split()[1:] for line in logs if line.startswith("$ ")]
    argvs = [argv for argv in argvs if argv[0].endswith("terraform") and len(argv) > 1]
    preflight = ("version", "validate")
    return [argv[1] for argv in argvs if argv[1] not in preflight and "-backend=false" not in argv]


def test_no_approval_plans_and_applies_in_one_process_and_the_next_run_converges(
    backend_block, ec2, sandbox_env
) -> None:
    name = f"direct-{uuid.uuid4().hex[:8]}"
    request = StackRequest(stack=DIRECT, variables={"name": name})
    backend = TerraformBackend.load(backend_block)
    s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    key = f"{backend.key_prefix}{DIRECT}/terraform.tfstate"
    started = datetime.now(UTC)
    try:
        state = apply_stack(request, backend_block, AWS_BLOCK, return_state=True)
        outcome = state.result()
        assert state.is_completed() and outcome.applied and outcome.reason == "applied", outcome
        assert [(r.address, r.action) for r in outcome.plan.resources] == [(SG, "create")]
        assert (outcome.plan.add, outcome.plan.change, outcome.plan.destroy) == (1, 0, 0)
        [group] = _groups(ec2, name)
        assert outcome.result.value("security_group_id") == group["GroupId"]
        assert outcome.result.value("security_group_name") == name

        run_id = state.state_details.flow_run_id
        logs = read_flow_run_logs(run_id)
        assert any(m.startswith("one-process apply: ") for m in logs), logs
        assert _terraform_commands(logs) == ["init", "apply"], _terraform_commands(logs)  # no show, no output
        assert f"{SG}: Plan to create" in logs and not any(m.startswith('{"@level"') for m in logs)
        names = _task_names(run_id)
        assert f"apply {DIRECT}" in names and f"plan {DIRECT}" not in names, names
        [plan] = [a for a in flow_run_artifacts(run_id) if a.key == "plan-sandbox-direct"]
        markdown = str(plan.data)
        assert "1 to add, 0 to change, 0 to destroy" in markdown and f"`{SG}` | create" in markdown
        assert "one Terraform process" in markdown

        assert s3.get_object(Bucket=backend.bucket, Key=f"{key}.converged.json")["ContentLength"] > 0
        trail = audit_events(f"devops.stack.{DIRECT}", started, {"devops.stack.applied"})
        applied = [e for e in trail if e["event"] == "devops.stack.applied"]
        assert len(applied) == 1, trail  # one audit event for the apply
        assert applied[0]["payload"]["path"] == "one-process" and applied[0]["payload"]["changed"] == [SG]

        again = apply_stack(request, backend_block, AWS_BLOCK)
        assert again.reason == "converged" and again.result.value("security_group_id") == group["GroupId"]
        planned = apply_stack(request.model_copy(update={"skip_when_converged": False}), backend_block)
        assert planned.reason == "no changes" and not planned.applied, planned
        assert planned.result.value("security_group_id") == group["GroupId"]
        assert len(_groups(ec2, name)) == 1
    finally:
        destroy_now(DIRECT, {"name": name}, backend_block, AWS_BLOCK)


def test_approval_required_takes_the_saved_plan_path(backend_block, ec2) -> None:
    name = f"direct-approval-{uuid.uuid4().hex[:8]}"
    request = StackRequest(
        stack=DIRECT, variables={"name": name}, approval="required", approval_timeout_seconds=3
    )
    state = apply_stack(request, backend_block, AWS_BLOCK, return_state=True)
    outcome = state.result()
    assert outcome.reason == "approval timed out" and not outcome.applied, outcome
    assert outcome.plan.add == 1 and outcome.plan.resource(SG) is not None
    logs = read_flow_run_logs(state.state_details.flow_run_id)
    assert "saved-plan apply: approval is required: a person sees the plan before it is applied" in logs
    assert _terraform_commands(logs) == ["init", "plan", "show"], _terraform_commands(logs)
    assert f"plan {DIRECT}" in _task_names(state.state_details.flow_run_id)
    assert _groups(ec2, name) == []
