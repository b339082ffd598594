"""Scale-out on Prefect's own engine, for real: PostgreSQL 15, a Prefect server on it, two process workers
(`scripts/scale-out up`, devenv/scale_out/), prefect.yaml deployed to it.

- several runs of different deployments started at once all complete, and both workers ran some (the
  worker that ran a flow run is its `prefect.worker.name` label, set by the worker in Prefect 3.9);
- two runs on the same Terraform stack never overlap (the strict per-stack global concurrency limit holds
  across workers: shown with the runs' own timestamps), runs on different stacks do overlap;
- a "host" dies in the middle of a real `ami-rollout` (prefect.yaml's devops-packer-xwiki), while
  `terraform apply` holds the state lock after the launch template changed: every process the worker
  started is SIGKILLed (the worker, the flow run, Terraform: the process worker starts each flow run in
  its own session and our runner starts Terraform in another, so killing the worker alone would leave
  them going on, orphaned). Prefect's zombie automation marks the run Crashed when its heartbeats stop; a
  rerun with the same parameters, picked up by the other worker, releases the dead run's lock, reuses its
  AMI and converges (one AMI per content hash, the launch template on it, no lock, verified by the flow;
  the destroy afterwards leaves nothing behind, so the state knew every resource the dead run touched).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

STACK = "scalac/internal-prod/xwiki"
ROLLOUT = "ami-rollout/devops-packer-xwiki"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def cluster(sandbox_env: dict[str, str]) -> Iterator[object]:
    from devenv import scale_out

    directory = Path(tempfile.mkdtemp(prefix="devops-scale-out-"))
    poll = os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "2")  # quicker pick-ups: a shorter test
    try:
        yield scale_out.up(directory, workers=2, limit=2, ui=False, zombie_seconds=60)
    finally:
        scale_out.down(directory)
        shutil.rmtree(directory, ignore_errors=True)
        if poll == "2":
            os.environ.pop("PREFECT_WORKER_QUERY_SECONDS", None)


@contextmanager
def on(state) -> Iterator[None]:
    """Prefect client calls inside go to the scale-out server, not to the test session's server."""
    from prefect.settings import temporary_settings

    with temporary_settings(updates=state.client_settings()):
        yield


@contextmanager
def _client(state):
    from prefect.client.orchestration import get_client

    with on(state), get_client(sync_client=True) as client:
        yield client


def start(name: str, parameters: dict | None = None):
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters or {}, timeout=0, tags=["scale-out-test"])


def start_on(state, name: str, parameters: dict | None = None):
    with on(state):
        return start(name, parameters)


def wait_final(state, run_ids: list, seconds: float) -> dict:
    """Flow runs by id once every one is final (or the deadline passed: then the last read states)."""
    end = time.monotonic() + seconds
    with _client(state) as client:
        while True:
            runs = {rid: client.read_flow_run(rid) for rid in run_ids}
            if all(r.state and r.state.is_final() for r in runs.values()) or time.monotonic() > end:
                return runs
            time.sleep(1)


def describe(runs: dict) -> str:
    return "; ".join(
        f"{r.name} {r.state.type.value if r.state else '?'} {r.state.message if r.state else ''} "
        f"on {r.labels.get('prefect.worker.name')}"
        for r in runs.values()
    )


def running_interval(state, run) -> tuple[datetime, datetime]:
    """When the run entered Running and when it reached its final state (from its state history)."""
    with _client(state) as client:
        states = client.read_flow_run_states(run.id)
    began = min(s.timestamp for s in states if s.type.value == "RUNNING")
    ended = max(s.timestamp for s in states if s.is_final())
    return began, ended


# ---------------------------------------------------------------- tests


def test_server_runs_on_postgresql_with_two_workers(cluster) -> None:
    import asyncio

    import asyncpg

    from devenv import scale_out

    async def count() -> int:
        conn = await asyncpg.connect(
            host=scale_out.HOST,
            port=cluster.postgres["port"],
            user=scale_out.DB_USER,
            password=(cluster.dir / "postgres-password").read_text().strip(),
            database=scale_out.DB_NAME,
        )
        try:
            return await conn.fetchval("SELECT count(*) FROM deployment")
        finally:
            await conn.close()

    assert asyncio.run(count()) >= 1  # the deployments live in PostgreSQL
    with _client(cluster) as client:
        online = {
            w.name for w in client.read_workers_for_work_pool(scale_out.POOL) if w.status.value == "ONLINE"
        }
    assert online == {"worker-1", "worker-2"}
    assert scale_out.status(cluster.dir)


def test_runs_started_together_complete_on_both_workers(cluster, docker_client, workdir: Path) -> None:
    """Real deployments of prefect.yaml, all started at once."""
    from tests.conftest import TEST_LABEL, free_port

    container = f"xwiki-scale-{uuid.uuid4().hex[:8]}"
    real = [
        ("bake-image/bake-image", {"spec": {"host": "xwiki"}}),
        ("bake-image/bake-image", {"spec": {"host": "jenkins"}}),
        (
            "refresh-servers/devops-refresh-servers",
            {
                "target": {
                    "limit": "xwiki",
                    "extra_vars": {
                        "xwiki_container_name": container,
                        "xwiki_port": free_port(),
                        "xwiki_labels": {TEST_LABEL: "1"},
                        "target_root": str(workdir / "xwiki-root"),
                    },
                },
            },
        ),
        (
            "detect-drift/detect-drift",
            {
                "stacks": [{"stack": "sandbox/smoke"}],
                "servers": None,
                "fail_on_drift": False,
                "notify_block": None,
            },
        ),
    ]
    runs = [start_on(cluster, name, params) for name, params in real]
    final = wait_final(cluster, [r.id for r in runs], 300)
    assert all(r.state.is_completed() for r in final.values()), describe(final)
    workers = {r.labels.get("prefect.worker.name") for r in final.values()}
    assert workers == {"worker-1", "worker-2"}, describe(final)
    assert docker_client.containers.get(container).status == "running"
    print("runs started together:", describe(final))


def task_span(state, run_id) -> tuple[datetime, datetime]:
    """From the start of the run's first Terraform task to the end of its last (the stack-limited part)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client(state) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    tf = [t for t in tasks if t.name.startswith(("plan ", "apply ")) and t.start_time and t.end_time]
    assert tf, [t.name for t in tasks]
    return min(t.start_time for t in tf), max(t.end_time for t in tf)


@pytest.fixture
def backend_block(cluster, sandbox_env: dict[str, str]) -> str:
    """A TerraformBackend block with a key prefix of its own: this test's state never meets another's."""
    from tests.blocks import save_backend

    name = f"tf-backend-scale-{uuid.uuid4().hex[:8]}"
    with on(cluster):
        save_backend(sandbox_env, name, f"tests/{name}/", lock_timeout_seconds=60)
    return name


def test_one_stack_at_a_time_across_workers_different_stacks_in_parallel(cluster, backend_block: str) -> None:
    from devenv.scale_out import deployable
    from tasks.terraform_destroy import destroy_now

    if "apply-stack" not in deployable()[1]:
        pytest.skip("flows/apply.py is missing")
    tag = uuid.uuid4().hex[:8]
    smoke = "sandbox/smoke"
    xwiki = "scalac/internal-prod/xwiki"
    smoke_vars = {"name": f"scale-{tag}"}
    xwiki_vars = {"name": f"scale-{tag}", "ami_id": "ami-00000000"}
    params = [
        {"stack": smoke, "variables": {**smoke_vars, "description": "scale-out apply A"}},
        {"stack": smoke, "variables": {**smoke_vars, "description": "scale-out apply B"}},
        {"stack": xwiki, "variables": xwiki_vars},
    ]
    runs = [
        start_on(cluster, "apply-stack/apply-stack", {"request": p, "backend_block": backend_block})
        for p in params
    ]
    try:
        final = wait_final(cluster, [r.id for r in runs], 300)
        assert all(r.state.is_completed() for r in final.values()), describe(final)
        a, b, c = (task_span(cluster, r.id) for r in runs)
        first, second = sorted([a, b])
        assert first[1] <= second[0], f"two applies of {smoke} overlapped: {first} / {second}"
        assert any(s[0] < c[1] and c[0] < s[1] for s in (a, b)), f"{xwiki} waited for {smoke}: {a} {b} {c}"
        print(
            f"same stack: {first[0]:%T}-{first[1]:%T} then {second[0]:%T}-{second[1]:%T}; "
            f"other stack {c[0]:%T}-{c[1]:%T}; workers {describe(final)}"
        )
    finally:
        with on(cluster):
            destroy_now(smoke, smoke_vars, backend_block)
            destroy_now(xwiki, xwiki_vars, backend_block)


def host_processes(root: int) -> list[int]:
    """`root` and every process descending from it, parents first (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_host(pids: list[int]) -> None:
    """SIGKILL every process group of `pids` (parents first, so none can react), then each pid itself."""
    groups: list[int] = []
    for pid in pids:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group not in groups and group != os.getpgid(0):
            groups.append(group)
    for target, kill in [*((g, os.killpg) for g in groups), *((p, os.kill) for p in pids)]:
        try:
            kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_dead(pids: list[int], seconds: float) -> None:
    from devenv.processes import pid_alive

    end = time.monotonic() + seconds
    while alive := [pid for pid in pids if pid_alive(pid)]:
        assert time.monotonic() < end, f"still alive after SIGKILL: {alive}"
        time.sleep(0.2)


def launch_templates(ec2, prefix: str) -> list[dict]:
    pages = ec2.get_paginator("describe_launch_templates").paginate()
    return [
        t for page in pages for t in page["LaunchTemplates"] if t["LaunchTemplateName"].startswith(prefix)
    ]


def latest_image(ec2, lt_id: str) -> tuple[int, str]:
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id)["LaunchTemplateVersions"]
    latest = max(versions, key=lambda v: v["VersionNumber"])
    return latest["VersionNumber"], latest["LaunchTemplateData"]["ImageId"]


def image_tag(ec2, image_id: str, key: str) -> str | None:
    (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    return next((t["Value"] for t in image.get("Tags", []) if t["Key"] == key), None)


def amis_with_hash(ec2, digest: str) -> list[str]:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:content_hash", "Values": [digest]}])
    return sorted(i["ImageId"] for i in images["Images"])


def state_lock(s3, bucket: str, state_key: str):
    from tools import aws as aws_tool
    from tools import terraform as tf

    raw = aws_tool.read_object(s3, bucket, f"{state_key}.tflock")
    return tf.lock_from_json(raw) if raw is not None else None


def stack_terraform(state_key: str) -> list:
    from tools import terraform as tf

    return [p for p in tf.live_terraform_processes(STACK) if p.state_key == state_key]


def wait_for_terraform(state, run_id, state_key: str) -> None:
    """Until a terraform process works on `state_key` (the run holds the stack's slot then)."""
    end = time.monotonic() + 120
    with _client(state) as client:
        while not stack_terraform(state_key):
            current = client.read_flow_run(run_id)
            assert not current.state.is_final(), describe({run_id: current})
            assert time.monotonic() < end, f"no terraform on {state_key}: {current.state}"
            time.sleep(0.5)


def wait_for_held_apply(state, run_id, ec2, s3, bucket: str, state_key: str, lt_id: str):
    """The flow run, once its `terraform apply` holds the state lock after the launch template changed."""
    end = time.monotonic() + 240
    with _client(state) as client:
        while True:
            current = client.read_flow_run(run_id)
            assert not current.state.is_final(), describe({run_id: current})
            assert time.monotonic() < end, (
                f"terraform apply never changed the launch template: {current.state}"
            )
            if (
                any("apply" in p.argv for p in stack_terraform(state_key))
                and latest_image(ec2, lt_id)[0] > 1
                and state_lock(s3, bucket, state_key)
            ):
                return current
            time.sleep(0.5)


def released_lock_logs(state, parent_id) -> list[str]:
    """The 'releasing stale state lock' lines of a flow run's subflows, read back from the API."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with _client(state) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )
        end = time.monotonic() + 15
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[c.id for c in children]))
            )
            lines = [log.message for log in logs if log.message.startswith("releasing stale state lock")]
            if lines or time.monotonic() > end:
                return lines
            time.sleep(1)


def cancel(state, run_id) -> None:
    """Cancel a flow run through Prefect (its worker stops the flow process) and wait for it to end."""
    from prefect.states import Cancelling

    with _client(state) as client:
        run = client.read_flow_run(run_id)
        if run.state and not run.state.is_final():
            client.set_flow_run_state(run_id, Cancelling(), force=True)
    wait_final(state, [run_id], 90)


def completed_tasks(state, run_id) -> list[str]:
    """Names of the flow run's own task runs that completed."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client(state) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return [t.name for t in tasks if t.state and t.state.is_completed()]


def test_a_dead_worker_host_crashes_its_rollout_and_a_rerun_converges(
    cluster,
    backend_block: str,
    sandbox_env: dict[str, str],
) -> None:
    """prefect.yaml's ami-rollout on a stack that exists: the host running it dies while `terraform apply`
    holds the lock after the launch template changed; Prefect crashes the run; the rerun converges."""
    import boto3

    from blocks import TerraformBackend
    from devenv import scale_out
    from tasks.terraform_destroy import destroy_now
    from tools import terraform as tf

    tag = uuid.uuid4().hex[:8]
    name = f"xwiki-scale-{tag}"
    bake = {"host": "xwiki", "environment": f"e2e-scale-{tag}"}  # a content hash of this test's own
    with on(cluster):
        backend = TerraformBackend.load(backend_block)
    state_key = f"{backend.key_prefix}{STACK}/terraform.tfstate"
    ec2 = boto3.client("ec2", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    autoscaling = boto3.client("autoscaling", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])

    def rollout(hold_seconds: int):
        variables = {"name": name, "apply_hold_seconds": str(hold_seconds)}
        request = {"bake": bake, "stack": STACK, "variables": variables}
        return start_on(cluster, ROLLOUT, {"request": request, "backend_block": backend_block})

    run = victim = ami = None
    destroyed = False
    began = time.monotonic()
    try:
        # The stack exists before the rollout (its launch template on another image). The rollout starts
        # as soon as this apply holds the stack's slot: its bake overlaps the apply, its apply waits.
        request = {"stack": STACK, "variables": {"name": name, "ami_id": "ami-00000000"}}
        initial = start_on(
            cluster, "apply-stack/apply-stack", {"request": request, "backend_block": backend_block}
        )
        wait_for_terraform(cluster, initial.id, state_key)
        run = rollout(600)
        done = wait_final(cluster, [initial.id], 120)[initial.id]
        assert done.state.is_completed(), describe({initial.id: done})
        (lt,) = launch_templates(ec2, f"lt-{name}")
        lt_id = lt["LaunchTemplateId"]

        current = wait_for_held_apply(cluster, run.id, ec2, s3, backend.bucket, state_key, lt_id)
        victim = current.labels["prefect.worker.name"]
        survivor = ({"worker-1", "worker-2"} - {victim}).pop()
        flow_pid = int(str(current.infrastructure_pid).rsplit(":", 1)[-1])
        processes = host_processes(cluster.workers[victim]["pid"])
        assert flow_pid in processes, (flow_pid, processes)
        _version, ami = latest_image(ec2, lt_id)  # what the dead run baked and applied
        # The host dies: its worker, the flow run it started and that run's Terraform, all at once.
        kill_host(processes)
        killed_at = time.monotonic()
        wait_dead(processes, 30)
        stale = state_lock(s3, backend.bucket, state_key)
        assert stale is not None and stale.who == tf.this_holder()  # the dead run's lock is left behind

        crashed = wait_final(cluster, [run.id], 150)[run.id]
        assert crashed.state.is_crashed(), describe({run.id: crashed})
        detect = time.monotonic() - killed_at
        rerun = rollout(0)
        done = wait_final(cluster, [rerun.id], 240)[rerun.id]
        assert done.state.is_completed(), describe({rerun.id: done})  # bake, apply and verify passed
        assert done.labels["prefect.worker.name"] == survivor
        converged = time.monotonic() - killed_at
        verified = [n for n in completed_tasks(cluster, rerun.id) if n.startswith("verify-launch-template")]
        assert verified, completed_tasks(cluster, rerun.id)  # ami-rollout checked the LT and ASG with boto3

        digest = image_tag(ec2, ami, "content_hash")
        assert digest and amis_with_hash(ec2, digest) == [ami]  # reused: no second AMI for the same content
        version, image = latest_image(ec2, lt_id)
        assert image == ami, (version, image)
        assert [t["LaunchTemplateId"] for t in launch_templates(ec2, f"lt-{name}")] == [lt_id]
        groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        assert [g["LaunchTemplate"]["LaunchTemplateId"] for g in groups] == [lt_id]
        assert state_lock(s3, backend.bucket, state_key) is None
        released = released_lock_logs(cluster, rerun.id)
        assert released and stale.id in released[0], released
        with on(cluster):
            destroy_now(STACK, {"name": name, "ami_id": "ami-00000000"}, backend_block)
        destroyed = True
        # The state knew every resource the dead run's apply had touched: nothing is left behind.
        assert not launch_templates(ec2, f"lt-{name}")
        sgs = ec2.describe_security_groups()["SecurityGroups"]
        assert not [g["GroupId"] for g in sgs if g["GroupName"].startswith(f"{name}-")]
        assert not autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        print(
            f"crash detected {detect:.0f}s after the kill; rerun on {survivor} converged "
            f"{converged:.0f}s after the kill (launch template version {version} on {ami}); "
            f"{time.monotonic() - began:.0f}s in all"
        )
    finally:
        if victim:
            scale_out.start_worker(cluster, victim, limit=2)  # back to two workers for whatever runs next
        elif run is not None:  # failed before the kill: stop the held apply (Terraform releases its lock)
            cancel(cluster, run.id)
        if not destroyed:
            with on(cluster):
                destroy_now(STACK, {"name": name, "ami_id": "ami-00000000"}, backend_block)
        if ami:
            with suppress(Exception):
                ec2.deregister_image(ImageId=ami)
