"""Faults produced for real against the real tools: a killed builder, a full disk, moto going away
mid-bake and mid-apply, a flow process cancelled (SIGTERM) and killed (SIGKILL) mid-rollout.

Private services only: a private moto_server per test (never the sandbox's), private blocks, state keys
under a uuid prefix. Faults already covered elsewhere are listed in tests/reliability/catalogue.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest

from blocks import AWS_BLOCK
from flows.release import build_app
from tests.blocks import save_aws, save_backend
from tests.conftest import TEST_LABEL
from tests.reliability.helpers import PrivateMoto, ProcSampler, descends_from, processes, wait_for
from tools import sbt
from tools.errors import BakeFailed, BuildFailed, TerraformError
from tools.settings import INFRA_DIR, REPO_ROOT

pytestmark = pytest.mark.reliability
APP_SRC = INFRA_DIR / "apps" / "hire-help"
STACK = "scalac/internal-prod/xwiki"


@pytest.fixture
def app(workdir: Path) -> Path:
    path = workdir / "hire-help"
    shutil.copytree(APP_SRC, path)
    return path


def _backend(sandbox_env, uid: str) -> str:
    name = f"rel-backend-{uid}"
    return save_backend(sandbox_env, name, f"rel/{uid}/")


def _aws_block(endpoint: str, uid: str) -> str:
    # One retry per request (boto3 and Packer's max_retries): a stopped moto fails in seconds, not after
    # the SDKs' default back-off of ~50 s per attempt of the retried task.
    return save_aws(f"rel-aws-{uid}", endpoint, config={"retries": {"max_attempts": 2, "mode": "standard"}})


def _state_objects(sandbox_env, uid: str) -> dict[str, dict]:
    s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="eu-central-1")
    out = {}
    for obj in s3.list_objects_v2(Bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"], Prefix=f"rel/{uid}/").get(
        "Contents", []
    ):
        body = s3.get_object(Bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"], Key=obj["Key"])["Body"].read()
        out[obj["Key"]] = json.loads(body) if obj["Key"].endswith(".tfstate") else {"raw": body.decode()}
    return out


def _failure(state) -> BaseException:
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, BaseException), exc
    return exc


def _tool_pids(name: str, sub: str, ancestor: int) -> list[int]:
    return [
        pid
        for pid, argv in processes().items()
        if Path(argv[0]).name == name and sub in argv[1:3] and descends_from(pid, ancestor)
    ]


def _gone(pids: list[int], seconds: float = 120) -> None:
    wait_for(
        lambda: (
            not [
                p
                for p in pids
                if Path(f"/proc/{p}").exists()
                and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1][:3]
            ]
        ),
        seconds,
        f"processes {pids} to exit",
    )


# --- release: the builder -------------------------------------------------------------------------
def test_builder_container_killed_mid_build_fails_clearly(app, builder_image, docker_client, blocks) -> None:
    marker = uuid.uuid4().hex
    states: list = []
    params = {
        "app_path": str(app),
        "builder_image": builder_image,
        "cache_volume": f"rel-cache-{marker[:8]}",
        "build_command": ["sh", "-c", "echo compiling; sleep 300"],
        "labels": {TEST_LABEL: "1", "devops-flows.fault": marker},
    }
    thread = threading.Thread(target=lambda: states.append(build_app(params=params, return_state=True)))
    thread.start()
    selector = {"label": f"devops-flows.fault={marker}"}
    [container] = wait_for(lambda: docker_client.containers.list(filters=selector), 120, "builder started")
    time.sleep(1)
    container.kill()  # the fault: `docker kill` from outside
    thread.join(timeout=120)
    assert not thread.is_alive()
    exc = _failure(states[0])
    assert isinstance(exc, BuildFailed) and exc.exit_code == 137, repr(exc)
    assert "killed" in (exc.hint or "") and "compiling" in exc.tail
    assert docker_client.containers.list(all=True, filters=selector) == []  # removed, not left behind
    assert not (app / "target" / "universal").exists()  # nothing half-built is taken for a package


def test_disk_full_in_the_build_is_a_clear_error(app, builder_image, docker_client) -> None:
    """The builder's output directory is a 1 MiB tmpfs; the build writes 4 MiB into it."""
    marker = uuid.uuid4().hex
    spec = sbt.BuildSpec(
        image=builder_image,
        command=["sh", "-c", "echo packaging; dd if=/dev/zero of=/src/target/big.bin bs=1024 count=4096"],
        cache_volume=f"rel-cache-{marker[:8]}",
        tmpfs={"/src/target": "size=1m"},
        labels={TEST_LABEL: "1", "devops-flows.fault": marker},
        timeout=120,
    )
    (app / "target").mkdir()
    with pytest.raises(BuildFailed) as caught:
        sbt.build_in_container(docker_client, app, spec)
    exc = caught.value
    assert exc.exit_code not in (0, None)
    assert any("No space left on device" in line for line in exc.tail), exc.tail
    assert "disk space" in (exc.hint or "")
    assert docker_client.containers.list(all=True, filters={"label": f"devops-flows.fault={marker}"}) == []
    for suffix in ("ivy2", "coursier"):
        docker_client.volumes.get(f"rel-cache-{marker[:8]}-{suffix}").remove(force=True)


# --- AWS: moto going away -------------------------------------------------------------------------
@pytest.fixture
def private_moto():
    moto = PrivateMoto().start()
    yield moto
    moto.stop()


def test_moto_stopped_mid_bake_fails_the_bake_and_nothing_is_applied(
    private_moto, blocks, sandbox_env
) -> None:
    from flows.rollout import RolloutRequest, ami_rollout

    uid = uuid.uuid4().hex[:10]
    aws_block, backend = _aws_block(private_moto.endpoint, uid), _backend(sandbox_env, uid)
    request = RolloutRequest.model_validate(
        {"bake": {"host": "xwiki", "environment": f"rel-{uid}"}, "stack": STACK, "variables": {"name": uid}}
    )
    states: list = []
    me = os.getpid()
    with ProcSampler(interval=0.1) as sampler:
        thread = threading.Thread(
            target=lambda: states.append(ami_rollout(request, backend, aws_block, return_state=True))
        )
        thread.start()
        wait_for(
            lambda: _tool_pids("packer", "build", me) or not thread.is_alive(),
            180,
            "packer build to start",
            interval=0.05,
        )
        private_moto.stop()  # the fault: the AWS endpoint disappears mid-bake
        thread.join(timeout=400)
    assert not thread.is_alive(), "the rollout did not finish after moto went away"
    exc = _failure(states[0])
    assert isinstance(exc, BakeFailed), repr(exc)
    assert str(private_moto.port) in str(exc) or "connection refused" in str(exc).lower(), str(exc)
    # the pre-flight's `version`, `init -backend=false` and `validate` run before the bake, and the apply's
    # `init` runs ahead during it (tasks/terraform_context.py): none of them reads a plan or writes anything
    read_only = {"version", "validate", "init"}
    changing = [
        a for a in sampler.tools_seen if Path(a[0]).name == "terraform" and a[1:2] and a[1] not in read_only
    ]
    assert not changing, f"terraform planned or changed something after a bake failure: {changing}"
    assert _state_objects(sandbox_env, uid) == {}  # no plan, no apply, no state, no lock
    assert not _tool_pids("packer", "build", me)
    assert not _tool_pids("terraform", "init", me)  # the init ahead was stopped with the failed bake


def test_moto_unreachable_at_apply_keeps_state_and_releases_the_lock(
    private_moto, blocks, sandbox_env
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from flows.apply import apply_stack

    uid = uuid.uuid4().hex[:10]
    aws_block, backend = _aws_block(private_moto.endpoint, uid), _backend(sandbox_env, uid)
    variables = {"name": uid, "ami_id": "ami-12c6146b"}
    first = apply_stack(
        request={"stack": STACK, "variables": variables}, backend_block=backend, aws_block=aws_block
    )
    assert first.applied
    [key] = [k for k in _state_objects(sandbox_env, uid) if k.endswith(".tfstate")]
    before = _state_objects(sandbox_env, uid)[key]

    states: list = []
    changed = {**variables, "instance_type": "t3.medium"}  # the default is t3.small
    thread = threading.Thread(
        target=lambda: states.append(
            apply_stack(
                request={
                    "stack": STACK,
                    "variables": changed,
                    "approval": "required",
                    "approval_timeout_seconds": 300,
                },
                backend_block=backend,
                aws_block=aws_block,
                return_state=True,
            )
        )
    )
    thread.start()

    def paused():
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        only_paused = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        )
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=only_paused)
        return [r for r in runs if r.parameters.get("backend_block") == backend]

    [run] = wait_for(paused, 180, "the apply to pause for approval", interval=0.5)
    private_moto.stop()  # the fault: the plan was made, then AWS became unreachable
    resume_flow_run(run.id, run_input={"approved": True, "reason": "fault test"})
    thread.join(timeout=400)
    assert not thread.is_alive()
    exc = _failure(states[0])
    assert isinstance(exc, TerraformError), repr(exc)
    assert str(private_moto.port) in str(exc) or "connection refused" in str(exc).lower(), str(exc)
    after = _state_objects(sandbox_env, uid)
    assert [k for k in after if k.endswith(".tflock")] == [], f"lock left behind: {list(after)}"
    assert after[key]["lineage"] == before["lineage"]
    assert {r["type"] for r in after[key]["resources"]} >= {"aws_launch_template", "aws_autoscaling_group"}


# --- the flow process cancelled, then killed, mid-rollout -----------------------------------------
ROLLOUT_SCRIPT = textwrap.dedent("""
    import sys
    from flows.rollout import RolloutRequest, ami_rollout
    request = RolloutRequest.model_validate_json(sys.argv[1])
    ami_rollout(request, sys.argv[2], sys.argv[3])
""")


def _start_rollout(request, backend: str, aws_block: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", ROLLOUT_SCRIPT, request.model_dump_json(), backend, aws_block],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_rollout_cancelled_mid_bake_then_killed_mid_apply_then_converges(
    blocks, sandbox_env, workdir
) -> None:
    """SIGTERM (what Prefect's runner sends on cancel) during `packer build`: no packer left behind.
    SIGKILL of the flow process during `terraform apply`: the next run completes and converges."""
    from flows.rollout import RolloutRequest, ami_rollout
    from tasks.terraform_destroy import destroy_now

    uid = uuid.uuid4().hex[:10]
    backend = _backend(sandbox_env, uid)
    request = RolloutRequest.model_validate(
        {"bake": {"host": "xwiki", "environment": f"rel-{uid}"}, "stack": STACK, "variables": {"name": uid}}
    )
    ec2 = boto3.client("ec2", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"], region_name="eu-central-1")
    try:
        # 1. cancelled while packer builds
        proc = _start_rollout(request, backend, AWS_BLOCK, workdir / "cancel.log")
        try:
            packers = wait_for(lambda: _tool_pids("packer", "build", proc.pid), 180, "packer build", 0.05)
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        _gone(packers, 60)
        assert _state_objects(sandbox_env, uid) == {}, "the cancelled rollout reached terraform"

        # 2. killed (SIGKILL, no clean-up at all) while terraform applies
        proc = _start_rollout(request, backend, AWS_BLOCK, workdir / "kill.log")
        try:
            applying = wait_for(
                lambda: _tool_pids("terraform", "apply", proc.pid), 300, "terraform apply", 0.05
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        _gone(applying, 120)  # the orphaned terraform finishes (or stops) on its own and drops its lock

        # 3. the next run completes and converges: one AMI for this content, the template points at it
        result = ami_rollout(request, backend, AWS_BLOCK)
        lt_id = result.verified.launch_template_id if result.verified else None
        if lt_id is None:  # the killed run's terraform had finished the apply: nothing left to change
            assert not result.apply.plan.has_changes
            state = next(v for k, v in _state_objects(sandbox_env, uid).items() if k.endswith(".tfstate"))
            lt_id = next(
                r["instances"][0]["attributes"]["id"]
                for r in state["resources"]
                if r["type"] == "aws_launch_template"
            )
        versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
        latest = max(versions, key=lambda v: v["VersionNumber"])
        assert latest["LaunchTemplateData"]["ImageId"] == result.bake.ami_id
        amis = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:content_hash", "Values": [result.bake.content_hash]}]
        )["Images"]
        assert [a["ImageId"] for a in amis] == [result.bake.ami_id], amis
        assert [k for k in _state_objects(sandbox_env, uid) if k.endswith(".tflock")] == []
        again = ami_rollout(request, backend, AWS_BLOCK)
        assert again.bake.reused and not again.apply.plan.has_changes  # idempotent
    finally:
        destroy_now(STACK, {"name": uid, "ami_id": "ami-00000000"}, backend, AWS_BLOCK)
        for image in ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:environment", "Values": [f"rel-{uid}"]}]
        )["Images"]:
            ec2.deregister_image(ImageId=image["ImageId"])
