"""`scripts/bench --quick` runs end to end and prints its table. No time is asserted: this only proves the
benchmark still runs against the current flows (1 repetition, smallest sizes, private moto + Prefect)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tools.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_bench_quick_runs_and_prints_the_table(sandbox_env) -> None:
    output = Path(tempfile.mkdtemp(prefix="devops-flows-bench-test-")) / "latest.md"
    # the bench has its own Prefect server, and names its own Ansible roots (as when run by hand)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DEVOPS_ANSIBLE_"))}
    proc = subprocess.run(
        [str(REPO_ROOT / "scripts" / "bench"), "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    assert "| Comparison | Figure | n | median | min | max |" in proc.stdout
    assert "| Comparison | Ratio (of medians) | value | target | result |" in proc.stdout
    for comparison in (
        "1 full AMI rollout",
        "2 no-change rollout",
        "3 fan-out bakes",
        "4 refresh-servers",
        "5 release",
        "6 serve memory",
        "7 flow-run start-up",
    ):
        assert f"| {comparison} |" in proc.stdout, comparison
    assert "CPU:" in proc.stdout and "Terraform v" in proc.stdout
    assert "Prefect server database: postgres" in proc.stdout
    assert "| bash: 2 packer bakes at once (& + wait) |" in proc.stdout  # the machine's own fan-out limit
    for row in (  # the baselines: the original job, the same ansible-playbook, parallel efficiency
        "| original job as bash: bake, init, apply -auto-approve |",
        "| flow / original job |",
        "| bash: the same ansible-playbook, 1 host |",
        "| flow / bash, 2 hosts |",
        "| parallel efficiency: flow speed-up / bash speed-up |",
        "| flow-run process: exit after it, gc.freeze at exit |",
        "| exit: gc.freeze / without |",
    ):
        assert row in proc.stdout, row
    assert output.read_text().startswith("## Benchmark")
    shutil.rmtree(output.parent, ignore_errors=True)
