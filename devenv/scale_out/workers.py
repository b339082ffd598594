"""The scale-out's process workers: each `prefect worker start` its own process with its own PREFECT_HOME,
as if on its own host."""

from __future__ import annotations

import os
import sys
import time

from devenv.processes import pid_alive, spawn, stop_pid
from devenv.scale_out.automation import HEARTBEAT_SECONDS
from devenv.scale_out.server import prefect_env
from devenv.scale_out.state import POOL, ScaleOut, log
from tools.errors import ToolError
from tools.process import BASE_ENV
from tools.settings import public_env


def start_worker(state: ScaleOut, name: str, limit: int | None = None) -> int:
    """One `prefect worker start` process (own session, own PREFECT_HOME, as on its own host)."""
    current = state.workers.get(name, {})
    if pid_alive(current.get("pid")):
        return current["pid"]
    home = state.dir / "workers" / name
    home.mkdir(parents=True, exist_ok=True)
    # As on its own host: the worker holds its Prefect API credentials and the sandbox's endpoints and
    # paths; the flows it runs get every other credential from blocks, never from its environment.
    env = {
        **public_env(),
        **prefect_env(state, home),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "5"),
    }
    argv = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        POOL,
        "--name",
        name,
        "--type",
        "process",
    ]
    if limit:
        argv += ["--limit", str(limit)]
    pid = spawn(argv, state.logfile(name), env=env, inherit=(*BASE_ENV, "DEVOPS_SANDBOX_DIR", "PYTHONPATH"))
    state.workers[name] = {"pid": pid, "started": True, "limit": limit}
    state.save()
    log(f"worker: {name} (pid {pid}, log {state.logfile(name)})")
    return pid


def stop_worker(state: ScaleOut, name: str) -> None:
    current = state.workers.get(name, {})
    if current.get("started") and current.get("pid"):
        stop_pid(current["pid"], name, seconds=20)
    state.workers.pop(name, None)
    state.save()


def wait_for_workers(state: ScaleOut, names: list[str], seconds: float = 120) -> None:
    """Until every named worker has sent a heartbeat to the server (status ONLINE)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    end = time.monotonic() + seconds
    with temporary_settings(updates=state.client_settings()), get_client(sync_client=True) as client:
        while True:
            online = {
                w.name
                for w in client.read_workers_for_work_pool(POOL)
                if w.status and w.status.value == "ONLINE"
            }
            if set(names) <= online:
                return
            if time.monotonic() > end:
                raise ToolError(
                    f"workers {sorted(set(names) - online)} did not come online within {seconds:g}s",
                    hint=f"see {state.dir / 'logs'}",
                )
            time.sleep(1)
