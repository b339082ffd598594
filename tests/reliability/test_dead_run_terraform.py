"""Faults of a dead run's terraform, produced for real through the proxy in front of moto (slow_moto.py):

- a run SIGKILLed (worker host lost) while its terraform apply waits on AWS: the orphaned terraform goes
  on. The next run of the stack waits for it (it starts no terraform of its own meanwhile), and once the
  orphan has written the state it finds nothing to do: exactly one CreateSecurityGroup reached AWS;
- a first apply killed at the worst moment: AWS has created the security group, launch template and auto
  scaling group, and Terraform's state write is held by the proxy when the flow process, terraform and its
  provider are SIGKILLed together; the held write is then dropped, never reaching S3. The next run
  releases the dead run's lock (its holder is provably dead), adopts the three objects and converges.

After each: the state equals AWS, the lock is free, no tool of either run is left, a further plan is empty.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flows.apply import StackRequest
from tests import leftovers
from tests.reliability import kill_points as kp
from tests.reliability.helpers import wait_for

pytestmark = pytest.mark.reliability
SMOKE = "sandbox/smoke"
MOTO_AMI = "ami-12c6146b"  # one of moto's bundled images
WAITING = "waiting for a terraform process of a dead run"


def _terraforms(run_tmp: Path) -> list[leftovers.Leftover]:
    return [p for p in leftovers.tool_processes(run_tmp) if Path(p.argv[0]).name == "terraform"]


def _kill(proc: subprocess.Popen, *tool_dirs: Path) -> None:
    """SIGKILL a flow process left by a failed test, and every tool of its runs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    for run_tmp in tool_dirs:
        for tool in leftovers.tool_processes(run_tmp):
            try:
                os.kill(tool.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _security_groups(ctx: kp.Setup, name: str) -> list[str]:
    found = ctx.stack.ec2.describe_security_groups()["SecurityGroups"]
    return [g["GroupId"] for g in found if g["GroupName"] == name]


def _state_ids(stack: kp.Stack, kind: str) -> list[str]:
    state = stack.state() or {}
    return [
        instance["attributes"]["id"]
        for resource in state.get("resources", [])
        if resource["type"] == kind and resource.get("mode") == "managed"
        for instance in resource["instances"]
    ]


def _plan_is_empty(ctx: kp.Setup, stack: str, variables: dict[str, str]) -> bool:
    from tasks.terraform import plan_now

    return not plan_now(stack, variables, ctx.backend_block, ctx.aws_block).has_changes


def test_the_next_run_waits_for_a_dead_runs_terraform_and_never_applies_beside_it(
    blocks: list[str], sandbox_env: dict[str, str], workdir: Path
) -> None:
    from tasks.terraform_destroy import destroy_now

    with kp.setup(sandbox_env, workdir) as ctx:
        name = f"dead-tf-{ctx.uid}"
        variables = {"name": name}
        request = StackRequest(stack=SMOKE, variables=variables)
        stack = dataclasses.replace(ctx.stack, state_key=f"kp/{ctx.uid}/{SMOKE}/terraform.tfstate")
        next_tmp = workdir / "next-tmp"
        next_tmp.mkdir()
        next_log = workdir / "next.log"
        held = ctx.proxy.hold("CreateSecurityGroup")
        first = kp.start_process(ctx, request, workdir / "dead.log", script=kp.APPLY_SCRIPT)
        nxt = None
        try:
            wait_for(lambda: held.is_set() or first.poll() is not None, 300, "apply's CreateSecurityGroup")
            assert first.poll() is None, (workdir / "dead.log").read_text()[-3000:]
            orphans = _terraforms(ctx.run_tmp)
            assert orphans, "the dead run's terraform apply is not running"
            first.send_signal(signal.SIGKILL)  # the flow process alone: its terraform is orphaned
            first.wait(timeout=30)
            ctx.note(f"flow process killed; orphaned terraform {[p.pid for p in orphans]}")

            nxt = kp.start_process(ctx, request, next_log, script=kp.APPLY_SCRIPT, run_tmp=next_tmp)
            # the dead run's slot lease expires (about 75 s), then the next run finds the orphan
            wait_for(
                lambda: WAITING in next_log.read_text() or nxt.poll() is not None,
                300,
                "the next run to wait for the orphaned terraform",
            )
            assert nxt.poll() is None, next_log.read_text()[-3000:]
            watched = time.monotonic()
            while time.monotonic() - watched < 3:
                assert _terraforms(next_tmp) == [], "the next run started terraform beside the orphan"
                assert _terraforms(ctx.run_tmp), "the orphan ended while its call was held"
                time.sleep(0.2)

            ctx.proxy.release("CreateSecurityGroup")  # the orphan goes on, writes the state and exits
            assert nxt.wait(timeout=300) == 0, next_log.read_text()[-3000:]
            text = next_log.read_text()
            assert "apply-stack outcome: no changes" in text, text[-3000:]
            assert "exited: going on" in text, text[-3000:]

            assert ctx.proxy.counts["CreateSecurityGroup"] == 1
            groups = _security_groups(ctx, name)
            assert len(groups) == 1 and _state_ids(stack, "aws_security_group") == groups
            assert not stack.lock_exists()
            kp.wait_no_tools(ctx.run_tmp, 60)
            kp.wait_no_tools(next_tmp, 60)
            assert _plan_is_empty(ctx, SMOKE, variables)
        finally:
            ctx.proxy.clear()
            _kill(first, ctx.run_tmp)
            if nxt is not None:
                _kill(nxt, next_tmp)
            destroy_now(SMOKE, variables, ctx.backend_block, ctx.aws_block)
        assert _security_groups(ctx, name) == []


def test_a_first_apply_killed_at_its_state_write_is_adopted_by_the_next_run(
    blocks: list[str], sandbox_env: dict[str, str], workdir: Path
) -> None:
    from flows.apply import apply_stack

    with kp.setup(sandbox_env, workdir) as ctx:
        name = f"kp-{ctx.uid}"  # the set-up's clean-up destroys this stack
        variables = {"name": name, "ami_id": MOTO_AMI}
        request = StackRequest(stack=kp.STACK, variables=variables)
        ec2, autoscaling = ctx.stack.ec2, ctx.stack.autoscaling

        def in_aws() -> tuple[list[str], list[str], list[str]]:
            groups = [
                g["GroupId"]
                for g in ec2.describe_security_groups()["SecurityGroups"]
                if g["GroupName"].startswith(f"{name}-")
            ]
            templates = [
                t["LaunchTemplateId"]
                for t in ec2.describe_launch_templates()["LaunchTemplates"]
                if t["LaunchTemplateName"].startswith(f"lt-{name}")
            ]
            asgs = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
            return groups, templates, [g["AutoScalingGroupName"] for g in asgs]

        held = ctx.proxy.hold("PUT *.tfstate")
        first = kp.start_process(ctx, request, workdir / "killed.log", script=kp.APPLY_SCRIPT)
        try:
            wait_for(lambda: held.is_set() or first.poll() is not None, 300, "the first state write")
            assert first.poll() is None, (workdir / "killed.log").read_text()[-3000:]
            _kill(first, ctx.run_tmp)  # the flow process, terraform and its provider together
            kp.wait_no_tools(ctx.run_tmp, 30)
        finally:
            ctx.proxy.release("PUT *.tfstate", forward=False)  # the write dies with its writer
            _kill(first, ctx.run_tmp)

        # the worst moment: everything in AWS, nothing in the state, the dead run's lock held
        groups, templates, asgs = in_aws()
        assert (len(groups), len(templates), asgs) == (1, 1, [name]), (groups, templates, asgs)
        assert ctx.stack.state() is None
        assert ctx.stack.lock_exists()

        outcome = apply_stack(request, ctx.backend_block, ctx.aws_block)
        assert outcome.reason == "applied", outcome
        assert in_aws() == (groups, templates, asgs)  # adopted: no duplicate
        assert _state_ids(ctx.stack, "aws_launch_template") == templates
        assert _state_ids(ctx.stack, "aws_security_group") == groups
        assert ctx.stack.state_vs_aws() == []
        assert not ctx.stack.lock_exists()
        assert _plan_is_empty(ctx, kp.STACK, variables)
