"""prune-images never loses an AMI in use: more references than one page of every AWS listing, a
reference that appears between the decision and the deregister, an apply-stack in flight with an old AMI.

Against the sandbox's moto (images tagged with a host of their own, so other tests' AMIs are never
candidates) and, for the concurrent apply, the real Terraform in a separate flow process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from blocks import AWS_BLOCK
from flows.prune import prune_images
from tasks.aws import clients
from tasks.prune import prune_now
from tasks.stack_slot import stack_limit_name
from tasks.terraform_destroy import destroy_now
from tools.settings import REPO_ROOT

pytestmark = pytest.mark.e2e
STACK = "scalac/internal-prod/xwiki"
SOURCE = "ami-785db401"  # one of moto's bundled images


def _images(ec2, host: str, count: int) -> list[str]:
    """`count` project AMIs of `host`; the last one strictly the newest (CreationDate has 1 s resolution)."""
    ids = []
    for index in range(count):
        if index == count - 1:
            time.sleep(1.1)
        inst = ec2.run_instances(ImageId=SOURCE, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ami = ec2.create_image(
            InstanceId=inst,
            Name=f"{host}-{index}-{uuid.uuid4().hex[:6]}",
            TagSpecifications=[
                {
                    "ResourceType": "image",
                    "Tags": [{"Key": "project", "Value": "devops-flows"}, {"Key": "host", "Value": host}],
                }
            ],
        )
        ec2.terminate_instances(InstanceIds=[inst])
        ids.append(ami["ImageId"])
    return ids


def _available(ec2, ids: list[str]) -> set[str]:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": ids}])["Images"]
    return {i["ImageId"] for i in images if i["State"] == "available"}


def _cleanup_images(ec2, ids: list[str]) -> None:
    for image_id in _available(ec2, ids):
        ec2.deregister_image(ImageId=image_id)


def _record_calls(client) -> dict[str, list[dict]]:
    """Every request the client sends, by operation (botocore's own event hook: what really went out)."""
    calls: dict[str, list[dict]] = defaultdict(list)

    def seen(model, params, **_):
        calls[model.name].append(dict(params))

    client.meta.events.register("provide-client-params.*.*", seen)
    return calls


def test_prune_with_more_references_than_a_page_keeps_every_referenced_ami(blocks, sandbox_env):
    host = f"prune-{uuid.uuid4().hex[:6]}"
    ec2, autoscaling = clients(AWS_BLOCK, "ec2", "autoscaling")
    ids = _images(ec2, host, 8)
    lt_ver, lt_mid, by_instance, by_asg, by_bake, gone1, gone2, newest = ids
    lts, groups, instances = [], [], []
    try:
        # launch template 1: five versions (more than a page); the AMIs are in v1 and v3, not the latest
        lt1 = ec2.create_launch_template(
            LaunchTemplateName=f"lt1-{host}", LaunchTemplateData={"ImageId": lt_ver}
        )["LaunchTemplate"]["LaunchTemplateId"]
        lts.append(lt1)
        for image in (SOURCE, lt_mid, SOURCE, SOURCE):
            ec2.create_launch_template_version(LaunchTemplateId=lt1, LaunchTemplateData={"ImageId": image})
        # launch template 2 and three ASGs on it (one through a mixed instances policy): more than a page
        lt2 = ec2.create_launch_template(
            LaunchTemplateName=f"lt2-{host}",
            LaunchTemplateData={"ImageId": by_asg, "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        lts.append(lt2)
        spec = {"LaunchTemplateId": lt2, "Version": "$Latest"}
        for index in range(3):
            name = f"asg{index}-{host}"
            extra = (
                {"MixedInstancesPolicy": {"LaunchTemplate": {"LaunchTemplateSpecification": spec}}}
                if index == 1
                else {"LaunchTemplate": spec}
            )
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name, MinSize=0, MaxSize=1, DesiredCapacity=0,
                AvailabilityZones=["eu-central-1a"], **extra,
            )  # fmt: skip
            groups.append(name)
        # a running instance of one AMI
        instances.append(
            ec2.run_instances(ImageId=by_instance, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        )
        # an old AMI that a bake just reused: its host's latest bake record
        ec2.create_tags(Resources=[by_bake], Tags=[{"Key": "baked_at", "Value": "2099-01-01T00:00:00+00:00"}])

        calls = _record_calls(ec2)
        group_calls = _record_calls(autoscaling)
        report = prune_images(
            keep=1, dry_run=False, hosts=[host], aws_block=AWS_BLOCK, page_size=2, stacks=[STACK]
        )
        actions = {r.image_id: (r.action, r.reason) for r in report.rows}
        assert sorted(report.deregistered) == sorted([gone1, gone2]), actions
        assert _available(ec2, ids) == set(ids) - {gone1, gone2}
        assert actions[newest][0] == "keep (newest)"
        for image in (lt_ver, lt_mid, by_instance, by_asg, by_bake):
            assert actions[image][0] == "keep (referenced)", actions
        assert f"launch template {lt1} v1" in actions[lt_ver][1]
        assert f"launch template {lt1} v3" in actions[lt_mid][1]
        assert f"instance {instances[0]}" in actions[by_instance][1]
        assert f"ASG asg1-{host} ({lt2} $Latest)" in actions[by_asg][1], actions[by_asg]
        assert f"latest bake of {host}" in actions[by_bake][1]

        # paged for real: versions in windows of 2, ASGs over several pages, every listing with its size
        windows = [c for c in calls["DescribeLaunchTemplateVersions"] if c.get("LaunchTemplateId") == lt1]
        assert {(c["MinVersion"], c["MaxVersion"]) for c in windows} >= {("1", "2"), ("3", "4"), ("5", "5")}
        assert all(c["MaxResults"] == 2 for c in windows)
        assert any("NextToken" in c for c in group_calls["DescribeAutoScalingGroups"])
        assert all(c["MaxRecords"] == 2 for c in group_calls["DescribeAutoScalingGroups"])
        assert all(c["MaxResults"] == 5 for c in calls["DescribeInstances"])  # AWS's minimum
        assert all(c["MaxResults"] == 6 for c in calls["DescribeImages"] if "MaxResults" in c)
    finally:
        for name in groups:
            autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        if instances:
            ec2.terminate_instances(InstanceIds=instances)
        for lt in lts:
            ec2.delete_launch_template(LaunchTemplateId=lt)
        _cleanup_images(ec2, ids)


def test_a_reference_made_after_the_decision_is_seen_before_the_deregister(blocks, sandbox_env):
    """Between the decision and the deregister, a launch template version starts using one candidate and
    a bake reuses another (its bake record): both are kept; the untouched candidate goes."""
    host = f"prune-{uuid.uuid4().hex[:6]}"
    ec2, _ = clients(AWS_BLOCK, "ec2", "autoscaling")
    ids = _images(ec2, host, 4)
    lt_later, bake_later, untouched, newest = ids
    lts: list[str] = []

    def meanwhile(row) -> None:
        if row.image_id == lt_later:
            lts.append(
                ec2.create_launch_template(
                    LaunchTemplateName=f"lt-{host}", LaunchTemplateData={"ImageId": lt_later}
                )["LaunchTemplate"]["LaunchTemplateId"]
            )
        elif row.image_id == bake_later:
            from tasks.aws import record_bake

            record_bake.fn(bake_later, {}, AWS_BLOCK)  # what a bake that reuses the AMI records

    try:
        report = prune_now(keep=1, dry_run=False, hosts=[host], page_size=2, before_check=meanwhile)
        actions = {r.image_id: (r.action, r.reason) for r in report.rows}
        assert actions[lt_later][0] == "keep (referenced since the decision)", actions
        assert f"launch template {lts[0]} v1" in actions[lt_later][1]
        assert actions[bake_later] == ("keep (referenced since the decision)", f"latest bake of {host}")
        assert actions[untouched][0] == "deregister" and actions[newest][0] == "keep (newest)"
        assert _available(ec2, ids) == {lt_later, bake_later, newest}
    finally:
        for lt in lts:
            ec2.delete_launch_template(LaunchTemplateId=lt)
        _cleanup_images(ec2, ids)


APPLY_SCRIPT = textwrap.dedent("""
    import sys
    from flows.apply import StackRequest, apply_stack
    outcome = apply_stack(StackRequest.model_validate_json(sys.argv[1]), sys.argv[2], sys.argv[3])
    print("APPLIED", outcome.applied, outcome.result.value("launch_template_id"), flush=True)
""")


def test_prune_during_an_apply_of_an_old_ami_keeps_it(backend_block, sandbox_env, workdir: Path):
    """apply-stack points a launch template at an old AMI (as a rollout that reused it does) while a real
    prune starts: the prune waits for the stack's slot, then sees the launch template version."""
    from prefect.client.orchestration import get_client

    from flows.apply import StackRequest

    host = f"prune-{uuid.uuid4().hex[:6]}"
    ec2, _ = clients(AWS_BLOCK, "ec2", "autoscaling")
    old, newest = _images(ec2, host, 2)
    name = f"xwiki-{uuid.uuid4().hex[:8]}"
    request = StackRequest(stack=STACK, variables={"name": name, "ami_id": old})
    log = workdir / "apply.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", APPLY_SCRIPT, request.model_dump_json(), backend_block, AWS_BLOCK],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        slot = stack_limit_name(STACK)
        end = time.monotonic() + 180
        with get_client(sync_client=True) as client:
            while True:
                try:
                    if client.read_global_concurrency_limit_by_name(slot).active_slots >= 1:
                        break
                except Exception:  # noqa: BLE001 - the limit does not exist until apply-stack creates it
                    pass
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < end, "apply-stack did not take the stack slot in 180 s"
                time.sleep(0.2)
        report = prune_images(keep=1, dry_run=False, hosts=[host], aws_block=AWS_BLOCK, stacks=[STACK])
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
        applied = [line for line in log.read_text().splitlines() if line.startswith("APPLIED")]
        assert applied and applied[0].split()[1] == "True", log.read_text()[-3000:]
        lt_id = applied[0].split()[2]
        actions = {r.image_id: (r.action, r.reason) for r in report.rows}
        assert actions[old][0] == "keep (referenced)", actions
        assert f"launch template {lt_id} v1" in actions[old][1], actions
        assert report.deregistered == []
        assert _available(ec2, [old, newest]) == {old, newest}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 2)
            proc.wait(timeout=120)
        destroy_now(STACK, {"name": name, "ami_id": "ami-00000000"}, backend_block, AWS_BLOCK)
        _cleanup_images(ec2, [old, newest])
