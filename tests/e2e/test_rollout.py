"""ami-rollout, apply-stack and prune-images against moto with the real Packer and Terraform."""

from __future__ import annotations

import time
import uuid

import boto3
import pytest

from blocks import AWS_BLOCK, TerraformBackend
from flows.bake import BakeSpec
from flows.prune import prune_images
from flows.rollout import RolloutRequest, ami_rollout
from tasks.terraform import destroy_now

pytestmark = pytest.mark.e2e
STACK = "scalac/internal-prod/xwiki"


@pytest.fixture
def backend_block(blocks, sandbox_env) -> str:
    name = f"tf-backend-e2e-{uuid.uuid4().hex[:8]}"
    TerraformBackend(
        bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
        region=sandbox_env.get("AWS_DEFAULT_REGION", "eu-central-1"),
        key_prefix=f"tests/{name}/", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], lock_timeout_seconds=5,
    ).save(name, overwrite=True)
    return name


@pytest.fixture
def ec2(sandbox_env):
    return boto3.client("ec2", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])


def _lt_versions(ec2, lt_id):
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
    return {v["VersionNumber"]: v["LaunchTemplateData"]["ImageId"] for v in versions}


def test_rollout_bakes_applies_reuses_and_prunes(backend_block, ec2, sandbox_env):
    name = f"xwiki-{uuid.uuid4().hex[:8]}"
    env_tag = f"e2e-{uuid.uuid4().hex[:6]}"  # a fresh hash per test run: nothing reused from earlier runs
    spec = BakeSpec(host="xwiki", environment=env_tag)
    request = RolloutRequest(bake=spec, stack=STACK, variables={"name": name})
    try:
        first = ami_rollout(request, backend_block, AWS_BLOCK)
        ami1 = first.bake.ami_id
        assert not first.bake.reused and first.apply.applied
        image = ec2.describe_images(ImageIds=[ami1])["Images"][0]
        tags = {t["Key"]: t["Value"] for t in image["Tags"]}
        assert image["Name"] == "xwiki_ubuntu18.04"
        assert tags["content_hash"] == first.bake.content_hash and tags["host"] == "xwiki"
        assert tags["mode"] == "build" and tags["environment"] == env_tag and tags["git_commit"]
        lt_id = first.verified.launch_template_id
        assert _lt_versions(ec2, lt_id) == {1: ami1}
        asg = boto3.client("autoscaling", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
        group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
        assert group["LaunchTemplate"]["LaunchTemplateId"] == lt_id

        # nothing changed: the bake is reused, the plan is empty, nothing is applied
        second = ami_rollout(request, backend_block, AWS_BLOCK)
        assert second.bake.reused and second.bake.ami_id == ami1
        assert not second.apply.applied and not second.apply.plan.has_changes
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

        # the article's force_deregister: the new bake of the same ami_name replaced the old AMI
        assert ec2.describe_images(Filters=[{"Name": "image-id", "Values": [ami1]}])["Images"] == []
    finally:
        destroy_now(STACK, {"name": name, "ami_id": "ami-00000000"}, backend_block, AWS_BLOCK)


def test_prune_deregisters_unreferenced_images(blocks, ec2):
    """Old unreferenced project images go (with their snapshots); dry run first changes nothing."""
    host = f"prune-{uuid.uuid4().hex[:6]}"
    ids = []
    for _ in range(3):
        inst = ec2.run_instances(ImageId="ami-785db401", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ami = ec2.create_image(InstanceId=inst, Name=f"{host}-{uuid.uuid4().hex[:6]}",
                               TagSpecifications=[{"ResourceType": "image", "Tags": [
                                   {"Key": "project", "Value": "devops-flows"},
                                   {"Key": "host", "Value": host}]}])
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
    real = prune_images(keep=1, dry_run=False, hosts=[host], aws_block=AWS_BLOCK)
    assert real.deregistered == [ids[1]]
    left = [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "tag:host", "Values": [host]}])["Images"]]
    assert sorted(left) == sorted([ids[0], ids[2]])
    ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplate"]["LaunchTemplateId"])
    remaining = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not remaining & set(snapshots)
