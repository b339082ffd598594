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


# The points where a SIGKILL leaves an orphaned terraform that still changes AWS and writes the state (the
# bake's orphaned packer and a SIGKILL right as `terraform apply` starts are covered by test_faults.py and
# test_scale_out.py; an orphaned plan writes nothing). Each costs the dead run's 60 s slot lease in the next
# run: two keep the file under 300 s.
POINTS = ("launch-template-version", "state-write")


def test_rollout_sigkilled_at_each_kill_point_then_converges(blocks, sandbox_env, workdir: Path) -> None:
    with kp.setup(sandbox_env, workdir) as ctx:
        kp.next_runs_converge(ctx, ctx.request("t3.nano"), "set-up")  # the stack exists, the AMI is baked
        for point in POINTS:
            request = ctx.request(dict(kp.KILL_POINTS)[point])
            at_point = kp.arm(ctx, point)
            proc = kp.start_process(ctx, request, workdir / "killed.log")
            try:
                at_point(300, lambda: proc.poll() is None)  # noqa: B023 - called before the next iteration
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
    print("\n".join(ctx.log))
