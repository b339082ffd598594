"""A real flow served from a runner process of its own: `with served("flows.apply:apply_stack", name):`
yields the deployment's name; leaving the block stops the runner (SIGTERM to its process group).

`python -m tests.served MODULE:FLOW NAME` is that runner. It imports no test fixtures (tests/conftest.py
would point its Prefect at another server)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.settings import REPO_ROOT


@contextmanager
def served(flow_ref: str, name: str, log: Path, seconds: float = 90, lost: bool = False) -> Iterator[str]:
    """`lost=True`: the runner is SIGKILLed at the end (its host is lost), not stopped: a stopping runner
    cancels the runs it still tracks."""
    from prefect.client.orchestration import get_client

    flow_name = _load(flow_ref).name
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.served", flow_ref, name],
        cwd=REPO_ROOT,
        env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + seconds
        while True:
            assert proc.poll() is None, f"the runner exited: {log.read_text()[-3000:]}"
            try:
                with get_client(sync_client=True) as client:
                    client.read_deployment_by_name(f"{flow_name}/{name}")
                break
            except Exception:  # noqa: BLE001 - not registered yet
                assert time.monotonic() < end, f"{flow_name}/{name} was not served within {seconds}s"
                time.sleep(0.5)
        yield f"{flow_name}/{name}"
    finally:
        os.killpg(proc.pid, 9 if lost else 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


def _load(flow_ref: str):
    module, _, attr = flow_ref.partition(":")
    return getattr(importlib.import_module(module), attr)


if __name__ == "__main__":
    _load(sys.argv[1]).serve(name=sys.argv[2], pause_on_shutdown=False)
