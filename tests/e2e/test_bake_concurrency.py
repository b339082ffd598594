"""Two bakes of the same host and content at once end with one AMI, which both report, while a bake of
other content of that host runs beside them; an AMI of that name left untagged (a bake interrupted after
creating it) is adopted, not baked again. Real Packer against the sandbox's moto; each bake in its own
flow process, as two workers would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from prefect.concurrency.sync import concurrency

from blocks import AWS_BLOCK
from flows.bake import BakeSpec, bake_image
from tasks.aws import clients
from tasks.limits import ensure_bake_limit
from tasks.packer import plan_bake
from tools.settings import REPO_ROOT

pytestmark = pytest.mark.e2e

BAKE_SCRIPT = textwrap.dedent("""
    import sys
    from flows.bake import BakeSpec, bake_image
    result = bake_image(BakeSpec.model_validate_json(sys.argv[1]), sys.argv[2])
    print("RESULT " + result.model_dump_json(), flush=True)
""")


def _start(spec: BakeSpec, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BAKE_SCRIPT, spec.model_dump_json(), AWS_BLOCK],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _result(log: Path) -> dict:
    lines = [line for line in log.read_text().splitlines() if line.startswith("RESULT ")]
    assert lines, log.read_text()[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _images_with_hash(ec2, digest: str) -> list[dict]:
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:content_hash", "Values": [digest]}])[
        "Images"
    ]


def test_two_concurrent_bakes_of_the_same_content_end_with_one_ami(blocks, sandbox_env, workdir: Path):
    spec = BakeSpec(host="xwiki", environment=f"cc-{uuid.uuid4().hex[:8]}")  # a content hash of its own
    other = BakeSpec(host="xwiki", environment=f"cc-other-{uuid.uuid4().hex[:8]}")  # same host, other content
    ec2, _ = clients(AWS_BLOCK, "ec2", "autoscaling")
    logs = [workdir / "bake-a.log", workdir / "bake-b.log"]
    procs: list[subprocess.Popen] = []
    plan = plan_bake(spec.host, spec.os, spec.mode, spec.environment, AWS_BLOCK)
    try:
        # Hold the slot of this content until both bakes have resolved their source AMI (the step before
        # the slot), so they reach the content-hash lookup together when it is released.
        with concurrency(
            ensure_bake_limit("xwiki", plan.content_hash), occupy=1, strict=True, lease_duration=60
        ):
            procs = [_start(spec, log) for log in logs]
            # the slot is the content's, not the host's: a bake of other content runs to its end meanwhile
            beside = bake_image(other, AWS_BLOCK)
            assert not beside.reused and beside.content_hash != plan.content_hash
            end = time.monotonic() + 240
            while not all("source AMI:" in log.read_text() for log in logs):
                for proc, log in zip(procs, logs, strict=True):
                    assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < end, "the bakes did not reach the slot in 240 s"
                time.sleep(0.2)
            time.sleep(1.0)  # both are asking for the slot now
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        results = [_result(log) for log in logs]
        assert results[0]["content_hash"] == plan.content_hash, results
        ami = results[0]["ami_id"]
        assert results[1]["ami_id"] == ami, results
        assert sorted(r["reused"] for r in results) == [False, True], results
        images = _images_with_hash(ec2, results[0]["content_hash"])
        assert [i["ImageId"] for i in images] == [ami]
        tags = {t["Key"]: t["Value"] for t in images[0]["Tags"]}
        assert tags["host"] == "xwiki" and tags["baked_at"]

        # a bake stopped after Packer created the AMI but before it was tagged: the next bake adopts it
        # (Packer without force_deregister would refuse the name; with it, it would deregister the AMI)
        ec2.delete_tags(Resources=[ami], Tags=[{"Key": "content_hash"}])
        again = bake_image(spec, AWS_BLOCK)
        assert again.reused and again.ami_id == ami
        images = _images_with_hash(ec2, results[0]["content_hash"])
        assert [i["ImageId"] for i in images] == [ami]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 2)
                proc.wait(timeout=120)
        for image in ec2.describe_images(
            Owners=["self"],
            Filters=[{"Name": "tag:environment", "Values": [spec.environment, other.environment]}],
        )["Images"]:  # every AMI of this test's contents, whatever happened
            ec2.deregister_image(ImageId=image["ImageId"])
            for mapping in image.get("BlockDeviceMappings") or []:
                if (mapping.get("Ebs") or {}).get("SnapshotId"):
                    ec2.delete_snapshot(SnapshotId=mapping["Ebs"]["SnapshotId"])
