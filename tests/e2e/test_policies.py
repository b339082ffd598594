"""Plan policies against the real server and real Terraform against moto, on the sandbox/policy stack
(infra/policies/stacks.toml: instance-type-allowlist t3.nano/t3.micro, require-tags, warn-on-replacement,
protect-asg-launch-template): a deny fails the run before apply and leaves nothing behind; a pass
applies with the table artifact; a replacement warning makes approval=auto ask, and a rejection applies
nothing; a malformed selection fails apply-stack and ami-rollout before any process."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest

from blocks import AWS_BLOCK, TerraformBackend
from flows.apply import StackRequest, apply_stack
from tasks.terraform_destroy import destroy_now
from tests.e2e.test_approval import _form, _paused_run, _Run
from tests.sshd import flow_run_artifacts
from tools.errors import PolicyDenied
from tools.terraform_workspace import WORKSPACE_PREFIX

pytestmark = pytest.mark.e2e
STACK = "sandbox/policy"
ARTIFACT = "policy-sandbox-policy"


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir for this test's runs only: their Terraform workspaces land here, so 'this run's
    workspaces are gone' is checked without looking at other tests' (parallel) workspaces."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.fixture
def s3(sandbox_env):
    return boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])


def _objects(s3, backend_block: str) -> list[str]:
    backend = TerraformBackend.load(backend_block)
    listed = s3.list_objects_v2(Bucket=backend.bucket, Prefix=backend.key_prefix).get("Contents") or []
    return [item["Key"] for item in listed]


def _made(ec2, name: str) -> tuple[list[dict], list[dict]]:
    groups = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == name]
    templates = [
        t
        for t in ec2.describe_launch_templates()["LaunchTemplates"]
        if t["LaunchTemplateName"] == f"lt-{name}"
    ]
    return groups, templates


def _table(run_id) -> list[dict]:
    found = [a for a in flow_run_artifacts(run_id) if a.key == ARTIFACT]
    assert found and found[0].type == "table", [a.key for a in flow_run_artifacts(run_id)]
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data


def _cleanup(s3, ec2, backend_block: str, name: str) -> None:
    try:
        if _objects(s3, backend_block):  # something was applied
            destroy_now(STACK, {"name": name}, backend_block)
    finally:
        groups, templates = _made(ec2, name)
        for template in templates:
            ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])
        for group in groups:
            ec2.delete_security_group(GroupId=group["GroupId"])
        for key in _objects(s3, backend_block):
            s3.delete_object(Bucket=TerraformBackend.load(backend_block).bucket, Key=key)


def test_a_denied_plan_fails_the_run_before_apply_and_leaves_nothing(backend_block, ec2, s3, own_tmp) -> None:
    name = f"policy-deny-{uuid.uuid4().hex[:8]}"
    request = StackRequest(stack=STACK, variables={"name": name, "instance_type": "m5.24xlarge"})
    try:
        state = apply_stack(request, backend_block, AWS_BLOCK, return_state=True)
        assert state.is_failed(), state
        exc = state.result(raise_on_failure=False)
        assert isinstance(exc, PolicyDenied), repr(exc)
        assert [rule for rule, _ in exc.denials] == ["instance-type-allowlist"], exc.denials
        assert "instance-type-allowlist" in str(exc) and "m5.24xlarge" in str(exc)
        assert "instance-type-allowlist" in (state.message or ""), state.message
        rows = _table(state.state_details.flow_run_id)
        assert ("instance-type-allowlist", "deny") in {(r["rule"], r["level"]) for r in rows}, rows
        # nothing applied, nothing stored, no lock, no workspace of this run left
        assert _made(ec2, name) == ([], [])
        assert _objects(s3, backend_block) == []  # no state, no .tflock, no pending plan, no holder record
        assert list(own_tmp.glob(f"{WORKSPACE_PREFIX}*")) == []
    finally:
        _cleanup(s3, ec2, backend_block, name)


def test_a_pass_applies_and_a_replacement_warning_makes_auto_approval_ask(
    backend_block, ec2, s3, own_tmp
) -> None:
    from prefect.flow_runs import resume_flow_run

    name = f"policy-warn-{uuid.uuid4().hex[:8]}"
    try:
        # pass: applied, every rule in the table read back from the API
        state = apply_stack(
            StackRequest(stack=STACK, variables={"name": name}), backend_block, AWS_BLOCK, return_state=True
        )
        outcome = state.result()
        assert outcome.applied and outcome.reason == "applied", outcome
        rows = _table(state.state_details.flow_run_id)
        assert {r["rule"] for r in rows} == {
            "protect-asg-launch-template",
            "instance-type-allowlist",
            "require-tags",
            "warn-on-replacement",
        }, rows
        assert {r["level"] for r in rows} == {"pass"}, rows
        groups, templates = _made(ec2, name)
        assert [g["GroupId"] for g in groups] == [outcome.result.value("security_group_id")]
        assert {t["Key"]: t["Value"] for t in templates[0]["Tags"]}.get("owner") == "platform"

        # warn: a new description replaces the security group; approval=auto pauses for a person
        replaced = StackRequest(stack=STACK, variables={"name": name, "description": "replaced"})
        assert replaced.approval == "auto"
        run = _Run(replaced, backend_block)
        run.start()
        paused = _paused_run(name)
        _, description = _form(paused)
        assert "warn-on-replacement" in description and "aws_security_group.policy" in description, (
            description
        )
        warned = [r for r in _table(paused.id) if r["level"] == "warn"]
        assert [r["rule"] for r in warned] == ["warn-on-replacement"], warned
        resume_flow_run(paused.id, run_input={"approved": False, "approver": "Ada", "reason": "keep it"})
        run.join(timeout=300)
        assert not run.is_alive() and run.error is None, run.error
        rejected = run.state.result()
        assert rejected.reason == "rejected" and not rejected.applied, rejected
        assert [(g["GroupId"], g["Description"]) for g in _made(ec2, name)[0]] == [
            (outcome.result.value("security_group_id"), "devops-flows policy test")
        ]
        assert list(own_tmp.glob(f"{WORKSPACE_PREFIX}*")) == []
    finally:
        _cleanup(s3, ec2, backend_block, name)


@pytest.mark.parametrize(
    ("flow", "appended", "expected"),
    [
        ("apply-stack", '[stacks."sandbox/smoke"]\nno-such-rule = {}', "unknown policy rule 'no-such-rule'"),
        ("ami-rollout", '[stacks."scalac/internal-prod/xwiki"]\nx = {}', "stacks.toml is not valid TOML"),
    ],
    ids=["apply-stack-unknown-rule", "ami-rollout-bad-toml"],
)
def test_a_malformed_selection_fails_before_any_process(
    flow: str,
    appended: str,
    expected: str,
    backend_block,
    s3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.rollout import ami_rollout
    from tests.reliability.helpers import ProcSampler
    from tools import policy
    from tools.errors import InvalidInput

    broken = tmp_path / "policies"
    shutil.copytree(policy.POLICY_DIR, broken)
    with (broken / "stacks.toml").open("a") as fh:
        fh.write(f"\n{appended}\n")
    monkeypatch.setattr(policy, "POLICY_DIR", broken)
    name = f"policy-bad-{uuid.uuid4().hex[:8]}"
    with ProcSampler(interval=0.05) as sampler:
        if flow == "apply-stack":
            state = apply_stack(
                StackRequest(stack=STACK, variables={"name": name}),
                backend_block,
                AWS_BLOCK,
                return_state=True,
            )
        else:
            request = {"bake": {"host": "xwiki", "environment": f"rel-{name}"}, "variables": {"name": name}}
            state = ami_rollout(request=request, backend_block=backend_block, return_state=True)
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, InvalidInput) and expected in str(exc), repr(exc)
    assert sampler.tools_seen == [], f"a tool process was started: {sampler.tools_seen}"
    assert _objects(s3, backend_block) == []


def test_a_warning_suspends_a_deployment_run_and_the_approved_plan_is_checked_again(
    backend_block, ec2, s3, workdir: Path
) -> None:
    """The scheduled case: a deployment run with approval=auto whose plan warns suspends with the plan
    stored; approved, the rules run again over exactly that stored plan, and it is applied."""
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    from tests.e2e.test_durable_approval import _final, _state, _suspended
    from tests.served import served

    name = f"policy-durable-{uuid.uuid4().hex[:8]}"
    try:
        first = apply_stack(StackRequest(stack=STACK, variables={"name": name}), backend_block, AWS_BLOCK)
        assert first.applied, first
        request = StackRequest(stack=STACK, variables={"name": name, "description": "replaced"})
        assert request.approval == "auto"
        with served("flows.apply:apply_stack", f"policy-{name}", workdir / "served.log") as deployment:
            run = run_deployment(
                deployment,
                parameters={"request": request.model_dump(mode="json"), "backend_block": backend_block},
                timeout=0,
            )
            _suspended(run.id)
            assert [k for k in _objects(s3, backend_block) if "/pending/" in k], "no stored plan"
            resume_flow_run(run.id, run_input={"approved": True, "approver": "Ada", "reason": "expected"})
            assert _final(run.id).is_completed(), _state(run.id)
        assert [g["Description"] for g in _made(ec2, name)[0]] == ["replaced"]
        tables = [a for a in flow_run_artifacts(run.id) if a.key == ARTIFACT]
        assert len(tables) == 2, [a.key for a in flow_run_artifacts(run.id)]  # before asking, before applying
        assert not [k for k in _objects(s3, backend_block) if "/pending/" in k]
    finally:
        _cleanup(s3, ec2, backend_block, name)
