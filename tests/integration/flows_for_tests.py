"""Tiny flows the process-runner tests serve and cancel through a real Prefect runner."""

from __future__ import annotations

import os
import sys

from prefect import flow, task

from tools import process

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
    return process.run(["sh", "-c", TREE_SCRIPT, "sh", marker_dir], grace=process.Grace(2, 2)).exit_code


@flow(name="process-tree")
def process_tree(marker_dir: str) -> int:
    return run_tree(marker_dir)


@task
def failing_step() -> None:
    process.run(["sh", "-c", "echo 'packer: source AMI not found' >&2; exit 4"], what="packer build")


@flow(name="always-fails")
def always_fails() -> None:
    failing_step()


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    if len(sys.argv) > 2 and sys.argv[2] == "fails":
        always_fails.serve(name=sys.argv[1], pause_on_shutdown=False)
    else:
        process_tree.serve(name=sys.argv[1], pause_on_shutdown=False)
