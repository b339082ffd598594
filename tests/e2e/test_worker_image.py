"""The worker image (images/worker/Dockerfile), built for real with images/worker/build: a debootstrap
Debian base (nothing can be pulled here), the host's terraform, the project's dependencies from PyPI.

- the tools the flows drive answer inside it, as the non-root user it runs as;
- a Prefect process worker in a container of the image (host network: the test session's Prefect server
  and moto are on 127.0.0.1) picks up a `bake-image` deployment run that uses the image's code at
  /opt/devops-flows; the run completes, it ran on that worker, and moto holds the AMI it baked. The
  container gets only PREFECT_API_URL: the AWS endpoint and keys come from the `devops-aws` block.

The build is the expensive part (cold: debootstrap ~33 s, docker build ~97 s on 2 shared cores), done
once per module; a rerun on the same engine reuses the base image and the build cache.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, TEST_LABEL, read_flow_run_logs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

BUILD = REPO_ROOT / "images" / "worker" / "build"
TAG = "devops-flows/worker:test"
POOL = "devops-worker-image-test"
CODE_DIR = "/opt/devops-flows"


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def worker_image(sandbox_env: dict[str, str]) -> str:
    """images/worker/build, once per module; its step timings go to the test output."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(BUILD), "--tag", TAG],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    summary = [line for line in out.stderr.splitlines() if line.startswith("[build]")]
    print(f"worker image built in {time.monotonic() - started:.0f}s: " + "; ".join(summary))
    return TAG


def test_the_tools_answer_inside_the_image(worker_image: str) -> None:
    script = "id -un; packer version; terraform version; ansible --version; prefect version"
    out = docker("run", "--rm", "--label", TEST_LABEL, worker_image, "sh", "-c", script)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert text.splitlines()[0] == "devops", text
    assert "Packer v1.6.6" in text, text
    assert re.search(r"^Terraform v1\.(1[1-9]|[2-9]\d)\.", text, re.M), text
    assert re.search(r"^ansible \[core 2\.19\.", text, re.M), text
    assert re.search(r"^Version:\s+3\.9\.", text, re.M), text
    assert "prefect-aws:" in text and "prefect-docker:" in text, text


@pytest.fixture
def image_deployment(worker_image: str, blocks: list[str]) -> Iterator[Any]:
    """A `bake-image` deployment on a process pool of its own, run from the image's code directory."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.utilities.callables import parameter_schema

    from flows.bake import bake_image

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name(bake_image.name),
            name=f"worker-image-{uuid.uuid4().hex[:8]}",
            work_pool_name=POOL,
            entrypoint="flows/bake.py:bake_image",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": CODE_DIR}}],
            parameter_openapi_schema=parameter_schema(bake_image).model_dump_for_openapi(),
            enforce_parameter_schema=True,
        )
    yield deployment_id
    with get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)
        client.delete_work_pool(POOL)


def _wait_final(flow_run_id: Any, container: str, seconds: float) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "60", container).stdout
                pytest.fail(f"flow run not final after {seconds}s ({run.state}); worker log:\n{logs}")
            time.sleep(1)


def test_a_worker_in_the_image_runs_bake_image_against_moto(
    worker_image: str, image_deployment: Any, prefect_server: str, ec2: Any
) -> None:
    from prefect.client.orchestration import get_client

    environment = f"e2e-image-{uuid.uuid4().hex[:6]}"  # a fresh content hash: a real bake, not a reuse
    worker_name = f"image-worker-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(
            image_deployment, parameters={"spec": {"host": "xwiki", "environment": environment}}
        )
    container = f"devops-worker-image-{uuid.uuid4().hex[:8]}"
    started = docker(
        "run", "-d", "--name", container, "--label", TEST_LABEL, "--network", "host",
        "-e", f"PREFECT_API_URL={prefect_server}",
        worker_image,
        "prefect", "worker", "start", "--pool", POOL, "--type", "process",
        "--name", worker_name, "--run-once",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    images: list[dict[str, Any]] = []
    try:
        run = _wait_final(flow_run.id, container, 300)
        assert run.state.is_completed(), f"{run.state}\n" + "\n".join(read_flow_run_logs(run.id)[-40:])
        assert run.labels.get("prefect.worker.name") == worker_name, run.labels
        images = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:environment", "Values": [environment]}]
        )["Images"]
        assert len(images) == 1 and images[0]["State"] == "available", images
        tags = {t["Key"]: t["Value"] for t in images[0]["Tags"]}
        assert tags["host"] == "xwiki" and tags["content_hash"], tags
        messages = read_flow_run_logs(run.id)
        assert any(images[0]["ImageId"] in m for m in messages), messages[-30:]
    finally:
        for image in images:
            ec2.deregister_image(ImageId=image["ImageId"])
        docker("rm", "-f", container)
