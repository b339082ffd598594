"""Honest convergence against moto with the real Terraform and S3 state: a lost state write is not called
converged, drift is applied refresh-only, and detect-drift plans with the last apply's variables."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from blocks import AWS_BLOCK, TerraformBackend
from flows.apply import StackRequest, apply_stack
from flows.detect_drift import StackCheck, detect_drift
from tasks.terraform_destroy import destroy_now

pytestmark = pytest.mark.e2e
STACK = "scalac/internal-prod/xwiki"
LT = "aws_launch_template.xwiki-lt"


@pytest.fixture
def two_amis(ec2) -> tuple[str, str]:
    """Two images moto ships (any AMI id does for a launch template; these exist)."""
    images = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    return images[0], images[1]


@pytest.fixture
def s3(sandbox_env):
    return boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])


def _state(s3, backend_block: str, stack: str) -> dict:
    backend = TerraformBackend.load(backend_block)
    key = f"{backend.key_prefix}{stack}/terraform.tfstate"
    return json.loads(s3.get_object(Bucket=backend.bucket, Key=key)["Body"].read())


def _state_lt(state: dict) -> dict:
    [res] = [r for r in state["resources"] if r["mode"] == "managed" and r["type"] == "aws_launch_template"]
    return res["instances"][0]["attributes"]


def _aws_latest(ec2, lt_id: str) -> int:
    [lt] = ec2.describe_launch_templates(LaunchTemplateIds=[lt_id])["LaunchTemplates"]
    return lt["LatestVersionNumber"]


def _new_version(ec2, lt_id: str, image_id: str) -> int:
    """A launch template version made behind Terraform's back: the latest version's data (moto does not
    copy SourceVersion's data itself) with `image_id`."""
    latest = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Latest"])
    data = {**latest["LaunchTemplateVersions"][0]["LaunchTemplateData"], "ImageId": image_id}
    made = ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData=data)
    return made["LaunchTemplateVersion"]["VersionNumber"]


def test_a_lost_state_write_is_not_called_converged(backend_block, ec2, s3, two_amis):
    """An apply that AWS completed but whose state write was lost (a second signal to terraform) leaves a
    launch template version the state does not know, under an unchanged converged record. The next run
    with the previous inputs must see it: not converged, the plan shows drift, and afterwards the state's
    latest_version is AWS's. A version with the same data (pure drift) is saved refresh-only."""
    ami_a, ami_b = two_amis
    name = f"conv-{uuid.uuid4().hex[:8]}"
    request = StackRequest(stack=STACK, variables={"name": name, "ami_id": ami_a})
    try:
        first = apply_stack(request, backend_block, AWS_BLOCK)
        assert first.applied
        lt_id = first.result.value("launch_template_id")
        assert _state_lt(_state(s3, backend_block, STACK))["latest_version"] == 1
        same = apply_stack(request, backend_block, AWS_BLOCK)  # AWS agrees with the state: trusted
        assert same.reason == "converged", same.reason

        # the apply of ami_b made version 2 in AWS, then its state write was lost
        assert _new_version(ec2, lt_id, ami_b) == 2
        again = apply_stack(request, backend_block, AWS_BLOCK)
        assert again.reason != "converged" and again.applied, again.reason
        assert again.plan.drift >= 1 and "Changed outside Terraform" in again.plan.markdown()
        drifted = {c.name: (c.old, c.new) for d in again.plan.drifted if d.address == LT for c in d.changed}
        assert drifted["latest_version"] == (1, 2), drifted
        change = {c.name: (c.old, c.new) for c in again.plan.resource(LT).changed}
        assert change["image_id"] == (ami_b, ami_a), change  # the plan starts from what AWS has
        state_lt = _state_lt(_state(s3, backend_block, STACK))
        # 3, or 4 when the AWS provider retried a CreateLaunchTemplateVersion moto had done (under load)
        latest = _aws_latest(ec2, lt_id)
        assert state_lt["latest_version"] == latest and latest in (3, 4), (state_lt, latest)
        assert state_lt["image_id"] == ami_a

        # pure drift (a version with the same data): no resource change, saved with -refresh-only
        assert _new_version(ec2, lt_id, ami_a) == latest + 1
        refreshed = apply_stack(request, backend_block, AWS_BLOCK)
        assert refreshed.reason == "refreshed" and not refreshed.applied, refreshed.reason
        assert refreshed.plan.refresh_only and refreshed.plan.drift == 1 and not refreshed.plan.resources
        assert refreshed.plan.output_changes == {"launch_template_latest_version": "update"}
        assert refreshed.result.value("launch_template_latest_version") == latest + 1
        assert (
            _state_lt(_state(s3, backend_block, STACK))["latest_version"]
            == _aws_latest(ec2, lt_id)
            == latest + 1
        )

        settled = apply_stack(request, backend_block, AWS_BLOCK)  # recorded after the refresh: trusted
        assert settled.reason == "converged", settled.reason
        assert settled.result.value("launch_template_latest_version") == latest + 1
    finally:
        destroy_now(STACK, {"name": name, "ami_id": ami_a}, backend_block, AWS_BLOCK)


def test_detect_drift_plans_with_the_last_apply_and_without_the_lock(backend_block, s3, two_amis):
    """After a rollout of a non-default AMI (apply-stack with ami_id, as ami-rollout runs it), detect-drift
    plans with that apply's variables: no drift (the stack defaults would rename the group and look up
    another image). It plans with -lock=false: a state lock held by someone else neither fails nor
    delays it. A stack never applied is "not deployed", not a failure."""
    _, ami_b = two_amis
    name = f"drift-{uuid.uuid4().hex[:8]}"
    variables = {"name": name, "ami_id": ami_b}
    backend = TerraformBackend.load(backend_block)
    lock_key = f"{backend.key_prefix}{STACK}/terraform.tfstate.tflock"
    try:
        assert apply_stack(StackRequest(stack=STACK, variables=variables), backend_block, AWS_BLOCK).applied
        # a lock of another holder (an apply elsewhere): a locking plan would fail with StateLocked
        s3.put_object(
            Bucket=backend.bucket,
            Key=lock_key,
            Body=json.dumps(
                {"ID": str(uuid.uuid4()), "Operation": "OperationTypeApply", "Who": "someone@elsewhere"}
            ).encode(),
        )
        report = detect_drift(
            stacks=[StackCheck(stack=STACK), StackCheck(stack="sandbox/smoke")],
            servers=None,
            notify_block=None,
            backend_block=backend_block,
            aws_block=AWS_BLOCK,
        )
        assert not report.has_drift, report.markdown()
        [plan] = report.stacks
        assert plan.stack == STACK and not plan.has_changes and plan.drift == 0
        assert report.not_deployed == ["sandbox/smoke"]
        assert "`sandbox/smoke`: not deployed" in report.markdown()
    finally:
        s3.delete_object(Bucket=backend.bucket, Key=lock_key)
        destroy_now(STACK, variables, backend_block, AWS_BLOCK)
