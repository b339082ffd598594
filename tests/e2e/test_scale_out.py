"""Scale-out on Prefect's own engine, for real: PostgreSQL 15, a Prefect server on it, two process workers
(`scripts/scale-out up`, deployments/scale_out.py), prefect.yaml deployed to it.

- several runs of different deployments started at once all complete, and both workers ran some (the
  worker that ran a flow run is its `prefect.worker.name` label, set by the worker in Prefect 3.9);
- two runs on the same Terraform stack never overlap (the strict per-stack global concurrency limit holds
  across workers: shown with the runs' own timestamps), runs on different stacks do overlap;
- a "host" dies mid-run (SIGKILL of a worker's process group and of the flow run's process group: the
  process worker starts each flow run in its own session, so killing the worker alone leaves the run
  going on, orphaned, to completion): Prefect's zombie automation marks the run Crashed when its heartbeats
  stop, and a rerun, picked up by the other worker, converges.

Until the real flows exist this module deploys `scale_probe` (below) next to prefect.yaml's deployments.
Nothing here imports tests.conftest at module level: the workers import this file as a flow entrypoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from prefect import flow, get_run_logger

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROBE = "scale-probe"


@flow(name=PROBE)
def scale_probe(seconds: float = 5.0, stack: str | None = None) -> dict:
    """Test-only flow: sleeps, holding the stack's strict limit when `stack` is given."""
    from prefect.concurrency.sync import concurrency

    started = datetime.now().astimezone().isoformat()
    if stack:
        from tasks.terraform import stack_limit_name

        with concurrency(stack_limit_name(stack), occupy=1, strict=True):
            inside = datetime.now().astimezone().isoformat()
            time.sleep(seconds)
            left = datetime.now().astimezone().isoformat()
    else:
        inside = started
        time.sleep(seconds)
        left = datetime.now().astimezone().isoformat()
    get_run_logger().info("probe pid %s held %s from %s to %s", os.getpid(), stack, inside, left)
    return {"pid": os.getpid(), "inside": inside, "left": left}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def cluster(sandbox_env: dict[str, str]) -> Iterator[object]:
    from deployments import scale_out

    directory = Path(tempfile.mkdtemp(prefix="devops-scale-out-"))
    try:
        state = scale_out.up(directory, workers=2, limit=2, ui=False, zombie_seconds=60)
        with on(state):
            flow.from_source(str(REPO), "tests/e2e/test_scale_out.py:scale_probe").deploy(
                name=PROBE, work_pool_name=scale_out.POOL, print_next_steps=False
            )
        yield state
    finally:
        scale_out.down(directory)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def on(state) -> Iterator[None]:  # noqa: ANN001
    """Prefect client calls inside go to the scale-out server, not to the test session's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: state.api_url}):
        yield


@contextmanager
def _client(state):  # noqa: ANN001, ANN202
    from prefect.client.orchestration import get_client

    with on(state), get_client(sync_client=True) as client:
        yield client


def probe_spans(state, run_ids: list) -> dict:  # noqa: ANN001
    """run id -> (entered, left) the probe's limit, from the probe's own log line read back from the API."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    spans = {}
    with _client(state) as client:
        for rid in run_ids:
            end = time.monotonic() + 30
            while True:
                logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[rid])))
                line = next((log.message for log in logs if log.message.startswith("probe pid")), None)
                if line or time.monotonic() > end:
                    break
                time.sleep(1)
            assert line, f"no probe line in the logs of {rid}"
            words = line.split()
            spans[rid] = (datetime.fromisoformat(words[-3]), datetime.fromisoformat(words[-1]))
    return spans


def start(name: str, parameters: dict | None = None):  # noqa: ANN201
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters or {}, timeout=0, tags=["scale-out-test"])


def start_on(state, name: str, parameters: dict | None = None):  # noqa: ANN001, ANN201
    with on(state):
        return start(name, parameters)


def wait_final(state, run_ids: list, seconds: float) -> dict:  # noqa: ANN001
    """Flow runs by id once every one is final (or the deadline passed: then the last read states)."""
    end = time.monotonic() + seconds
    with _client(state) as client:
        while True:
            runs = {rid: client.read_flow_run(rid) for rid in run_ids}
            if all(r.state and r.state.is_final() for r in runs.values()) or time.monotonic() > end:
                return runs
            time.sleep(2)


def describe(runs: dict) -> str:
    return "; ".join(
        f"{r.name} {r.state.type.value if r.state else '?'} {r.state.message if r.state else ''} "
        f"on {r.labels.get('prefect.worker.name')}"
        for r in runs.values()
    )


def running_interval(state, run) -> tuple[datetime, datetime]:  # noqa: ANN001
    """When the run entered Running and when it reached its final state (from its state history)."""
    with _client(state) as client:
        states = client.read_flow_run_states(run.id)
    began = min(s.timestamp for s in states if s.type.value == "RUNNING")
    ended = max(s.timestamp for s in states if s.is_final())
    return began, ended


# ---------------------------------------------------------------- tests


def test_server_runs_on_postgresql_with_two_workers(cluster) -> None:  # noqa: ANN001
    import asyncio

    import asyncpg

    from deployments import scale_out

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


def test_runs_started_together_complete_on_both_workers(cluster, docker_client, workdir: Path) -> None:  # noqa: ANN001
    """Real deployments of prefect.yaml (those whose flow exists) plus probes, all started at once."""
    from deployments.scale_out import deployable
    from tests.conftest import TEST_LABEL, free_port

    _declared, present = deployable()
    container = f"xwiki-scale-{uuid.uuid4().hex[:8]}"
    real = {
        "bake-image": ("bake-image/bake-image", {"spec": {"host": "xwiki"}}),
        "bake-image ": ("bake-image/bake-image", {"spec": {"host": "jenkins"}}),
        "devops-refresh-servers": (
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
        "detect-drift": (
            "detect-drift/detect-drift",
            {
                "stacks": [{"stack": "sandbox/smoke"}],
                "servers": None,
                "fail_on_drift": False,
                "notify_block": None,
            },
        ),
    }
    runs = [start_on(cluster, name, params) for key, (name, params) in real.items() if key.strip() in present]
    runs += [start_on(cluster, f"{PROBE}/{PROBE}", {"seconds": 8}) for _ in range(4 - len(runs))]
    final = wait_final(cluster, [r.id for r in runs], 300)
    assert all(r.state.is_completed() for r in final.values()), describe(final)
    workers = {r.labels.get("prefect.worker.name") for r in final.values()}
    assert workers == {"worker-1", "worker-2"}, describe(final)
    if "devops-refresh-servers" in present:
        assert docker_client.containers.get(container).status == "running"
    print("runs started together:", describe(final))


def task_span(state, run_id) -> tuple[datetime, datetime]:  # noqa: ANN001
    """From the start of the run's first Terraform task to the end of its last (the stack-limited part)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client(state) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    tf = [t for t in tasks if t.name.startswith(("plan ", "apply ")) and t.start_time and t.end_time]
    assert tf, [t.name for t in tasks]
    return min(t.start_time for t in tf), max(t.end_time for t in tf)


@pytest.fixture
def backend_block(cluster, sandbox_env: dict[str, str]) -> str:  # noqa: ANN001
    """A TerraformBackend block with a key prefix of its own: this test's state never meets another's."""
    from blocks import TerraformBackend

    name = f"tf-backend-scale-{uuid.uuid4().hex[:8]}"
    with on(cluster):
        TerraformBackend(
            bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
            region=sandbox_env["AWS_DEFAULT_REGION"],
            key_prefix=f"tests/{name}/",
            endpoint_url=sandbox_env["AWS_ENDPOINT_URL"],
            lock_timeout_seconds=60,
        ).save(name, overwrite=True)
    return name


def test_one_stack_at_a_time_across_workers_different_stacks_in_parallel(cluster, backend_block: str) -> None:  # noqa: ANN001
    from deployments.scale_out import deployable
    from tasks.terraform import destroy_now

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


def test_a_dead_worker_host_crashes_its_run_and_a_rerun_converges(cluster) -> None:  # noqa: ANN001
    from deployments import scale_out

    run = start_on(cluster, f"{PROBE}/{PROBE}", {"seconds": 90})
    end = time.monotonic() + 120
    with _client(cluster) as client:
        while True:
            current = client.read_flow_run(run.id)
            if current.state.is_running() and current.infrastructure_pid:
                break
            assert time.monotonic() < end, describe({run.id: current})
            time.sleep(1)
    victim = current.labels["prefect.worker.name"]
    survivor = ({"worker-1", "worker-2"} - {victim}).pop()
    flow_pid = int(str(current.infrastructure_pid).rsplit(":", 1)[-1])
    time.sleep(3)  # let the first heartbeat go out
    # The host dies: its worker and the flow run it started (own session) are SIGKILLed together.
    os.killpg(cluster.workers[victim]["pid"], signal.SIGKILL)
    os.killpg(flow_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    crashed = wait_final(cluster, [run.id], 150)[run.id]
    assert crashed.state.is_crashed(), describe({run.id: crashed})
    detect = time.monotonic() - killed_at
    rerun = start_on(cluster, f"{PROBE}/{PROBE}", {"seconds": 2})
    done = wait_final(cluster, [rerun.id], 120)[rerun.id]
    assert done.state.is_completed(), describe({rerun.id: done})
    assert done.labels["prefect.worker.name"] == survivor
    print(f"crash detected {detect:.0f}s after the kill; rerun completed on {survivor}")
    scale_out.start_worker(cluster, victim, limit=2)  # back to two workers for whatever runs next
