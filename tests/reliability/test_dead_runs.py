"""Faults of dead runs against the real sandbox (moto, real terraform, apply-stack):

- a state lock left by a run whose holder record names a dead process of this host is released, the apply
  converges, and the lock, the record and the dead run's old workspace are gone (live or young ones kept);
- a lock whose record names another host identity (here: another pid namespace, i.e. another container
  with our host name) is never released: StateLocked names the holder, and the lock is untouched;
- a first apply killed after AWS created the security group, launch template and auto scaling group but
  before the state was written: the objects are created here with boto3 under the stack's names, exactly
  what such a killed apply leaves (killing a real one between the AWS call and the state write is not
  reproducible); the next apply adopts them and converges with no duplicates.

The locks and records are written by hand as Terraform and our task write them: a lock whose holder is
truly dead cannot be produced without killing a host.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from tests.blocks import save_backend
from tests.conftest import read_flow_run_logs
from tools import terraform as tf
from tools.errors import StateLocked
from tools.identity import ProcessRef, this_host, this_process
from tools.terraform_workspace import WORKSPACE_PREFIX

pytestmark = pytest.mark.reliability
SMOKE = "sandbox/smoke"
XWIKI = "scalac/internal-prod/xwiki"
MOTO_AMI = "ami-12c6146b"  # one of moto's bundled images
SUFFIX = "20261205120000000000000001"  # Terraform's unique suffix: 18 digits of time, 8 hex of a counter


@pytest.fixture
def backend(blocks, sandbox_env):
    uid = uuid.uuid4().hex[:10]
    name = f"rel-dead-{uid}"
    save_backend(sandbox_env, name, f"rel/{uid}/", lock_timeout_seconds=2)
    return name, f"rel/{uid}/", uid


def _client(sandbox_env, service: str):
    return boto3.client(service, endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="eu-central-1")


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _plant_lock(s3, bucket: str, key: str, identity, pid: int, run_id: str) -> bytes:
    """A lock as Terraform writes it and the holder record as our task writes it, a moment earlier."""
    started = datetime.now(UTC) - timedelta(seconds=1)
    record = tf.HolderRecord(
        process=ProcessRef(identity=identity, pid=pid), flow_run_id=run_id, stack="x", started=started
    )
    s3.put_object(Bucket=bucket, Key=tf.holder_key(key), Body=record.model_dump_json().encode())
    lock = {
        "ID": str(uuid.uuid4()),
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": tf.this_holder(),
        "Version": "1.11.4",
        "Created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z"),
        "Path": f"{bucket}/{key}",
    }
    body = json.dumps(lock).encode()
    s3.put_object(Bucket=bucket, Key=f"{key}.tflock", Body=body)
    return body


def _object(s3, bucket: str, key: str) -> bytes | None:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    if not any(o["Key"] == key for o in listed):
        return None
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _workspace(owner: ProcessRef, age_seconds: float) -> Path:
    root = Path(tempfile.gettempdir()) / f"{WORKSPACE_PREFIX}reltest-{uuid.uuid4().hex[:8]}"
    (root / "terraform").mkdir(parents=True)
    (root / "owner.json").write_text(owner.model_dump_json())
    then = time.time() - age_seconds
    os.utime(root / "owner.json", (then, then))
    return root


def test_a_lock_of_a_dead_holder_here_is_released_and_dead_workspaces_swept(backend, sandbox_env):
    from flows.apply import apply_stack
    from tasks.terraform_destroy import destroy_now

    block, prefix, uid = backend
    bucket = sandbox_env["DEVOPS_TF_STATE_BUCKET"]
    key = f"{prefix}{SMOKE}/terraform.tfstate"
    s3 = _client(sandbox_env, "s3")
    dead = _dead_pid()
    _plant_lock(s3, bucket, key, this_host(), dead, "dead-run")
    old_dead = _workspace(ProcessRef(identity=this_host(), pid=dead), 120)
    young_dead = _workspace(ProcessRef(identity=this_host(), pid=dead), 0)
    old_live = _workspace(this_process(), 120)
    elsewhere = _workspace(
        ProcessRef(identity=this_host().model_copy(update={"pid_namespace": 1}), pid=dead), 120
    )
    variables = {"name": f"rel-dead-{uid}"}
    try:
        state = apply_stack(
            request={"stack": SMOKE, "variables": variables}, backend_block=block, return_state=True
        )
        outcome = state.result()
        assert outcome.reason == "applied"
        assert _object(s3, bucket, f"{key}.tflock") is None  # released, and the apply's own lock too
        assert _object(s3, bucket, tf.holder_key(key)) is None
        state_doc = json.loads(_object(s3, bucket, key))
        assert [r["type"] for r in state_doc["resources"]] == ["aws_security_group"]
        logs = read_flow_run_logs(state.state_details.flow_run_id)
        assert any("releasing stale state lock" in m and f"pid {dead}" in m for m in logs), logs
        assert any(str(old_dead) in m for m in logs if "removed the workspace" in m), logs
        assert not old_dead.exists()
        assert young_dead.exists() and old_live.exists() and elsewhere.exists()  # maybe in use: kept
    finally:
        for root in (old_dead, young_dead, old_live, elsewhere):
            subprocess.run(["rm", "-rf", str(root)], check=False)
        destroy_now(SMOKE, variables, block)


def test_a_lock_of_another_identity_is_never_released(backend, sandbox_env):
    from flows.apply import apply_stack

    block, prefix, uid = backend
    bucket = sandbox_env["DEVOPS_TF_STATE_BUCKET"]
    key = f"{prefix}{SMOKE}/terraform.tfstate"
    s3 = _client(sandbox_env, "s3")
    other = this_host().model_copy(update={"pid_namespace": this_host().pid_namespace + 1})
    lock = _plant_lock(s3, bucket, key, other, _dead_pid(), f"other-run-{uid}")
    record = _object(s3, bucket, tf.holder_key(key))
    try:
        with pytest.raises(StateLocked) as caught:
            apply_stack(
                request={"stack": SMOKE, "variables": {"name": f"rel-other-{uid}"}}, backend_block=block
            )
        message = str(caught.value)
        assert (
            f"other-run-{uid}" in message and tf.this_holder() in message and "OperationTypeApply" in message
        )
        assert json.loads(lock)["Created"][:19].replace("T", " ") in message  # Created
        assert _object(s3, bucket, f"{key}.tflock") == lock  # untouched
        assert _object(s3, bucket, tf.holder_key(key)) == record  # the holder's record is put back
        assert _object(s3, bucket, key) is None  # nothing was applied
    finally:
        s3.delete_object(Bucket=bucket, Key=f"{key}.tflock")
        s3.delete_object(Bucket=bucket, Key=tf.holder_key(key))


def test_orphans_of_a_killed_first_apply_are_adopted_and_the_run_converges(backend, sandbox_env):
    from flows.apply import apply_stack
    from tasks.terraform_destroy import destroy_now

    block, prefix, uid = backend
    name = f"xw-adopt-{uid}"
    ec2, autoscaling = _client(sandbox_env, "ec2"), _client(sandbox_env, "autoscaling")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    sg = ec2.create_security_group(GroupName=f"{name}-{SUFFIX}", Description="xwiki instances", VpcId=vpc)
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"lt-{name}{SUFFIX}",
        LaunchTemplateData={
            "ImageId": MOTO_AMI,
            "InstanceType": "t3.small",
            "NetworkInterfaces": [{"DeviceIndex": 0, "Groups": [sg["GroupId"]]}],
        },
        TagSpecifications=[  # as Terraform creates it: with the stack's tags (require-tags policy)
            {
                "ResourceType": "launch-template",
                "Tags": [
                    {"Key": k, "Value": v}
                    for k, v in {
                        "Name": name,
                        "environment": "prod",
                        "owner": "platform",
                        "project": "xwiki",
                    }.items()
                ],
            }
        ],
    )["LaunchTemplate"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "$Latest"},
        VPCZoneIdentifier=sorted(s["SubnetId"] for s in subnets)[0],
    )
    variables = {"name": name, "ami_id": MOTO_AMI}

    def templates() -> list[str]:
        found = ec2.describe_launch_templates()["LaunchTemplates"]
        return [t["LaunchTemplateId"] for t in found if t["LaunchTemplateName"].startswith(f"lt-{name}")]

    def groups() -> list[str]:
        found = ec2.describe_security_groups()["SecurityGroups"]
        return [g["GroupId"] for g in found if g["GroupName"].startswith(f"{name}-")]

    try:
        state = apply_stack(
            request={"stack": XWIKI, "variables": variables}, backend_block=block, return_state=True
        )
        outcome = state.result()
        assert outcome.reason == "applied", outcome
        logs = read_flow_run_logs(state.state_details.flow_run_id)
        adopted = [m for m in logs if m.startswith("adopting ")]
        assert len(adopted) == 3 and lt["LaunchTemplateId"] in " ".join(adopted), adopted
        assert templates() == [lt["LaunchTemplateId"]] and groups() == [sg["GroupId"]]  # no duplicates
        asgs = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        assert [g["LaunchTemplate"]["LaunchTemplateId"] for g in asgs] == [lt["LaunchTemplateId"]]
        assert outcome.result.value("launch_template_id") == lt["LaunchTemplateId"]
        again = apply_stack(
            request={"stack": XWIKI, "variables": variables, "skip_when_converged": False},
            backend_block=block,
        )
        assert again.reason == "no changes", again.plan.counts()  # converged
    finally:
        destroy_now(XWIKI, variables, block)
        for group in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
            "AutoScalingGroups"
        ]:
            autoscaling.delete_auto_scaling_group(
                AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True
            )
        for template in templates():
            ec2.delete_launch_template(LaunchTemplateId=template)
        for group in groups():
            ec2.delete_security_group(GroupId=group)
    assert not templates() and not groups()
