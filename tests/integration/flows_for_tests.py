"""Tiny flows the process-runner tests serve and cancel through a real Prefect runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, task

from tasks.task_runner import StoppingThreadPoolTaskRunner
from tools import process
from tools.settings import REPO_ROOT
from tools.stopping import escalating

# The parent shell traps SIGINT (writes a marker, exits); its background child ignores SIGINT, as
# non-interactive shells make it, so only SIGTERM/SIGKILL stop it: the whole escalation is exercised.
TREE_SCRIPT = """
echo $$ > "$1/parent.pid"
trap 'echo int > "$1/parent-got-sigint"; exit 130' INT
sleep 300 &
echo $! > "$1/child.pid"
echo tree-started
wait
"""


@task
def run_tree(marker_dir: str) -> int:
    return process.run(["sh", "-c", TREE_SCRIPT, "sh", marker_dir], stop=escalating(2, 2)).exit_code


@flow(name="process-tree")
def process_tree(marker_dir: str) -> int:
    return run_tree(marker_dir)


@flow(name="process-tree-submitted", task_runner=StoppingThreadPoolTaskRunner(max_workers=2))
def process_tree_submitted(marker_dir: str) -> int:
    """The same tool, from a submitted task: it runs in a pool thread, not in the flow's main thread."""
    return run_tree.submit(marker_dir).result()


@task
def failing_step() -> None:
    process.run(["sh", "-c", "echo 'packer: source AMI not found' >&2; exit 4"], what="packer build")


@flow(name="always-fails")
def always_fails() -> None:
    failing_step()


@flow(name="apply-for-tests")
def apply_for_tests(request: dict, backend_block: str) -> str:
    """apply-stack as a subflow of a served test flow (the cancel test stops it mid-apply)."""
    from flows.apply import StackRequest, apply_stack

    return apply_stack(StackRequest(**request), backend_block).reason


@contextmanager
def served_run(flow_name: str, mode: str = "tree", parameters: dict | None = None) -> Iterator:
    """Serve one of these flows from a subprocess (a real Prefect runner) and start a run of it."""
    from prefect.deployments import run_deployment

    name = f"{flow_name}-{uuid.uuid4().hex[:8]}"
    served = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.flows_for_tests", name, mode],
        cwd=REPO_ROOT,
        env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        start_new_session=True,
    )
    try:
        run = None
        end = time.monotonic() + 90
        while run is None and time.monotonic() < end:
            try:
                run = run_deployment(f"{flow_name}/{name}", parameters=parameters or {}, timeout=0)
            except Exception:  # noqa: BLE001 - the served deployment is not registered yet
                time.sleep(1)
        assert run is not None, f"the served deployment {flow_name}/{name} never appeared"
        yield run
    finally:
        os.killpg(served.pid, 15)
        served.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    if len(sys.argv) > 2 and sys.argv[2] == "fails":
        always_fails.serve(name=sys.argv[1], pause_on_shutdown=False)
    elif len(sys.argv) > 2 and sys.argv[2] == "submitted":
        process_tree_submitted.serve(name=sys.argv[1], pause_on_shutdown=False)
    elif len(sys.argv) > 2 and sys.argv[2] == "apply":
        apply_for_tests.serve(name=sys.argv[1], pause_on_shutdown=False)
    elif len(sys.argv) > 2 and sys.argv[2] == "deploy":
        from flows.release import deploy_app

        deploy_app.serve(name=sys.argv[1], pause_on_shutdown=False)
    else:
        process_tree.serve(name=sys.argv[1], pause_on_shutdown=False)
