"""ami-rollout, apply-stack and prune-images against moto with the real Packer and Terraform."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import boto3
import pytest

from blocks import AWS_BLOCK, resolve
from flows.bake import BakeSpec
from flows.prune import prune_images
from flows.rollout import RolloutRequest, ami_rollout
from tasks.terraform_destroy import destroy_now
from tests.audit_events import audit_events, related_kinds
from tools.errors import RolloutFailed

pytestmark = pytest.mark.e2e
STACK = "scalac/internal-prod/xwiki"


def _lt_versions(ec2, lt_id):
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
    return {v["VersionNumber"]: v["LaunchTemplateData"]["ImageId"] for v in versions}


def _amis_with_hash(ec2, digest):
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:content_hash", "Values": [digest]}])
    return sorted(i["ImageId"] for i in images["Images"])


def test_rollout_bakes_applies_reuses_rolls_back_and_prunes(backend_block, ec2, sandbox_env):
    name = f"xwiki-{uuid.uuid4().hex[:8]}"
    env_tag = f"e2e-{uuid.uuid4().hex[:6]}"  # a fresh hash per test run: nothing reused from earlier runs
    spec = BakeSpec(host="xwiki", environment=env_tag)
    request = RolloutRequest(bake=spec, stack=STACK, variables={"name": name})
    started = datetime.now(UTC)
    try:
        loads = resolve.LOADS.copy()
        first = ami_rollout(request, backend_block, AWS_BLOCK)
        ami1 = first.bake.ami_id
        assert not first.bake.reused and first.apply.applied
        # the rollout, its bake-image and apply-stack subflows and the init ahead read each block once
        read = resolve.LOADS - loads
        assert read == {("AwsCredentials", AWS_BLOCK): 1, ("TerraformBackend", backend_block): 1}, read
        image = ec2.describe_images(ImageIds=[ami1])["Images"][0]
        tags = {t["Key"]: t["Value"] for t in image["Tags"]}
        assert image["Name"] == f"xwiki_ubuntu18.04_{first.bake.content_hash[:12]}"
        assert tags["content_hash"] == first.bake.content_hash and tags["host"] == "xwiki"
        assert tags["mode"] == "build" and tags["environment"] == env_tag and tags["git_commit"]
        lt_id = first.verified.launch_template_id
        assert _lt_versions(ec2, lt_id) == {1: ami1}
        asg = boto3.client("autoscaling", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
        group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
        assert group["LaunchTemplate"]["LaunchTemplateId"] == lt_id

        # nothing changed: the bake is reused, Terraform does not run (converged), still verified
        second = ami_rollout(request, backend_block, AWS_BLOCK)
        assert second.bake.reused and second.bake.ami_id == ami1
        assert not second.apply.applied and second.apply.reason == "converged"
        assert second.verified.latest_image_id == ami1
        assert _lt_versions(ec2, lt_id) == {1: ami1}

        # a changed variable -> a new AMI -> launch template version 2 with the new image id
        changed = request.model_copy(update={"bake": BakeSpec(host="xwiki", environment=env_tag + "-b")})
        third = ami_rollout(changed, backend_block, AWS_BLOCK)
        ami2 = third.bake.ami_id
        assert ami2 != ami1 and not third.bake.reused
        lt_change = third.apply.plan.resource("aws_launch_template.xwiki-lt")
        assert lt_change.action == "update"
        assert {(c.name, c.old, c.new) for c in lt_change.changed} >= {("image_id", ami1, ami2)}
        assert _lt_versions(ec2, lt_id) == {1: ami1, 2: ami2}
        assert third.verified.latest_version == 2

        # a bake deregisters nothing: the previous AMI (a rollback target) is still there
        assert ec2.describe_images(ImageIds=[ami1])["Images"][0]["State"] == "available"
        for ami, digest in ((ami1, first.bake.content_hash), (ami2, third.bake.content_hash)):
            assert _amis_with_hash(ec2, digest) == [ami]

        # verify fails after the change (the ASG is pinned to version 2 while the launch template moves to
        # version 3): the transaction's rollback re-applies ami2 (version 4) and the run fails clearly
        pinned = request.model_copy(update={"variables": {"name": name, "asg_launch_template_version": "2"}})
        state = ami_rollout(pinned, backend_block, AWS_BLOCK, return_state=True)
        assert state.is_failed()
        with pytest.raises(RolloutFailed) as caught:
            state.result()
        message = str(caught.value)
        assert "rollout verification failed" in message and "version 2" in message, message
        assert f"rolled back to the previous AMI {ami2}" in message, message
        # version 3 is the pinned apply's ami1, the last one the rollback's ami2; under load the AWS
        # provider may retry a CreateLaunchTemplateVersion moto already did (one more version, same AMI)
        versions = _lt_versions(ec2, lt_id)
        later = [versions[v] for v in sorted(versions) if v > 2]
        assert {1: versions[1], 2: versions[2]} == {1: ami1, 2: ami2}, versions
        assert later[0] == ami1 and later[-1] == ami2 and set(later) == {ami1, ami2}, versions

        # the audit trail, read back from the server's events API: every change, with the run that made it
        baked = audit_events(f"devops.ami.{ami1}", started, {"devops.ami.baked", "devops.ami.reused"})
        assert {e["event"] for e in baked} == {"devops.ami.baked", "devops.ami.reused"}, baked
        made = next(e for e in baked if e["event"] == "devops.ami.baked")
        assert (
            made["payload"]["content_hash"] == first.bake.content_hash and made["payload"]["host"] == "xwiki"
        )
        assert {"flow-run", "flow"} <= related_kinds(made), made["related"]
        applied = [
            e
            for e in audit_events(f"devops.stack.{STACK}", started, {"devops.stack.rolled-back"})
            if e["payload"].get("launch_template_id") == lt_id
        ]
        names = [e["event"] for e in sorted(applied, key=lambda e: e["occurred"])]
        assert names[:2] == ["devops.stack.applied"] * 2 and names[-1] == "devops.stack.rolled-back", names
        back = next(e for e in applied if e["event"] == "devops.stack.rolled-back")
        assert back["payload"]["restored"] == {"ami_id": ami2}, back["payload"]
    finally:
        destroy_now(STACK, {"name": name, "ami_id": "ami-00000000"}, backend_block, AWS_BLOCK)


def test_prune_deregisters_unreferenced_images(blocks, ec2):
    """Old unreferenced project images go (with their snapshots); dry run first changes nothing."""
    host = f"prune-{uuid.uuid4().hex[:6]}"
    ids = []
    for _ in range(3):
        inst = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ami = ec2.create_image(
            InstanceId=inst,
            Name=f"{host}-{uuid.uuid4().hex[:6]}",
            TagSpecifications=[
                {
                    "ResourceType": "image",
                    "Tags": [{"Key": "project", "Value": "devops-flows"}, {"Key": "host", "Value": host}],
                }
            ],
        )
        ec2.terminate_instances(InstanceIds=[inst])
        ids.append(ami["ImageId"])
        time.sleep(1.1)  # distinct CreationDate (second resolution) so "newest" is well defined
    # the oldest one is still referenced by a launch template version: it must stay
    lt = ec2.create_launch_template(LaunchTemplateName=f"lt-{host}", LaunchTemplateData={"ImageId": ids[0]})
    dry = prune_images(keep=1, dry_run=True, hosts=[host], aws_block=AWS_BLOCK)
    assert dry.deregistered == [ids[1]]
    assert {r.image_id: r.action for r in dry.rows}[ids[0]] == "keep (referenced)"
    assert len(ec2.describe_images(ImageIds=ids)["Images"]) == 3
    snapshots = [s for r in dry.rows if r.image_id == ids[1] for s in r.snapshots]
    started = datetime.now(UTC)
    real = prune_images(keep=1, dry_run=False, hosts=[host], aws_block=AWS_BLOCK)
    assert real.deregistered == [ids[1]]
    gone = audit_events(f"devops.ami.{ids[1]}", started, {"devops.ami.deregistered"})
    assert [(e["event"], e["payload"]["host"]) for e in gone] == [("devops.ami.deregistered", host)], gone
    assert not audit_events(f"devops.ami.{ids[0]}", started, set(), seconds=0)  # dry run and kept: no event
    left = [
        i["ImageId"]
        for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:host", "Values": [host]}])[
            "Images"
        ]
    ]
    assert sorted(left) == sorted([ids[0], ids[2]])
    ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplate"]["LaunchTemplateId"])
    remaining = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not remaining & set(snapshots)
