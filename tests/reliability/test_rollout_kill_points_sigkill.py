"""Fault: the flow-run process of a real ami-rollout SIGKILLed (worker host lost) at each kill point of
tests/reliability/kill_points.py; after each, the invariants of tests/reliability/invariants.py.

A SIGKILLed run's tools are orphaned and run on: its packer finishes the bake, its terraform finishes
(plan, apply, state write) and drops its lock. The test waits for them to exit before the next run (so the
next run's lock check does not race an orphan that still holds the lock; the flow's own wait for a live
holder is the terraform helpers' job). The next run also waits for the dead run's Prefect concurrency slot
(its lease expires after 60 s): that wait is expected and part of the next run's time.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.reliability import kill_points as kp

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("point", [p for p, _ in kp.KILL_POINTS])
def test_rollout_sigkilled_at_a_kill_point_then_converges(point, blocks, sandbox_env, workdir: Path) -> None:  # noqa: ANN001
    instance_type = dict(kp.KILL_POINTS)[point]
    with kp.setup(sandbox_env, workdir) as ctx:
        if point != "bake":  # the stack exists (and the AMI is baked) before the run that is killed
            kp.next_runs_converge(ctx, ctx.request("t3.nano"), "set-up")
        request = ctx.request(instance_type)
        at_point = kp.arm(ctx, point)
        proc = kp.start_process(ctx, request, workdir / "killed.log")
        try:
            at_point(300)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            ctx.proxy.clear()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        kp.wait_no_tools(ctx.run_tmp, 300)  # the orphans finish on their own
        assert not ctx.stack.lock_exists(), f"{point}: the orphaned terraform left its lock"
        assert ctx.stack.state_vs_aws() == [], f"{point}: state and AWS differ after the orphan finished"
        kp.next_runs_converge(ctx, request, point)
