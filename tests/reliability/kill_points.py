"""A real ami-rollout stopped at each kill point, then the invariants (tests/reliability/invariants.py).

Shared by test_rollout_kill_points_cancel.py (a Prefect API cancel of a served run, as a user does it) and
test_rollout_kill_points_sigkill.py (SIGKILL of the flow-run process: the worker host is lost).

The kill points, each detected from a real signal, never from a sleep:
- bake: a `packer build` of the run is in /proc;
- plan: a `terraform plan` of the run is in /proc;
- apply-start: a `terraform apply` of the run is in /proc;
- launch-template-version: the proxy in front of moto (slow_moto.py) holds the provider's
  CreateLaunchTemplateVersion call, which is in flight;
- state-write: the proxy holds Terraform's PUT of the state object.
Each point changes the stack (a new instance type) so that the step it kills has something to do. The
killed run's tools carry its private TMPDIR: that is how "no tool left" finds them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from tests import leftovers
from tests.blocks import save_aws, save_backend
from tests.reliability.helpers import wait_for
from tests.reliability.invariants import Stack, tools_left, wait_no_tools  # noqa: F401 - re-exported
from tests.reliability.slow_moto import SlowMoto
from tools.settings import REPO_ROOT

STACK = "scalac/internal-prod/xwiki"
# (kill point, instance type the killed run and the next one apply)
KILL_POINTS = (
    ("bake", "t3.small"),
    ("plan", "t3.medium"),
    ("apply-start", "t3.large"),
    ("launch-template-version", "t3.xlarge"),
    ("state-write", "t3.2xlarge"),
)
HOLD_SECONDS = 5  # how long the proxy holds the call a kill point waits for


@dataclass
class Setup:
    uid: str
    proxy: SlowMoto
    aws_block: str
    backend_block: str
    stack: Stack
    run_tmp: Path
    env_tag: str
    log: list[str] = field(default_factory=list)

    def request(self, instance_type: str) -> Any:
        from flows.rollout import RolloutRequest

        return RolloutRequest.model_validate(
            {
                "bake": {"host": "xwiki", "environment": self.env_tag},
                "stack": STACK,
                "variables": {"name": f"kp-{self.uid}", "instance_type": instance_type},
            }
        )

    def note(self, line: str) -> None:
        self.log.append(line)
        print(line)  # in the test's captured output


@contextmanager
def setup(sandbox_env: dict[str, str], workdir: Path) -> Iterator[Setup]:
    """A proxy in front of the sandbox's moto, blocks pointing at it, a state key of the test's own."""
    uid = uuid.uuid4().hex[:8]
    endpoint = sandbox_env["AWS_ENDPOINT_URL"]
    with SlowMoto(endpoint) as proxy:
        aws_block = f"kp-aws-{uid}"
        save_aws(aws_block, proxy.endpoint)
        backend_block = f"kp-backend-{uid}"
        save_backend(sandbox_env, backend_block, f"kp/{uid}/", endpoint_url=proxy.endpoint)

        def client(service: str) -> Any:
            return boto3.client(service, endpoint_url=endpoint, region_name="eu-central-1")

        stack = Stack(
            s3=client("s3"),
            ec2=client("ec2"),
            autoscaling=client("autoscaling"),
            bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
            state_key=f"kp/{uid}/{STACK}/terraform.tfstate",
        )
        run_tmp = workdir / "run-tmp"
        run_tmp.mkdir()
        ctx = Setup(uid, proxy, aws_block, backend_block, stack, run_tmp, f"kp-{uid}")
        try:
            yield ctx
        finally:
            proxy.clear()
            _cleanup(ctx)


def _cleanup(ctx: Setup) -> None:
    from tasks.terraform_destroy import destroy_now

    try:
        variables = {"name": f"kp-{ctx.uid}", "ami_id": "ami-00000000"}
        destroy_now(STACK, variables, ctx.backend_block, ctx.aws_block)
    finally:
        ec2 = ctx.stack.ec2
        for image in ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "tag:environment", "Values": [ctx.env_tag]}]
        )["Images"]:
            ec2.deregister_image(ImageId=image["ImageId"])


def tool_of_run(ctx: Setup, name: str, sub: str) -> Callable[[], bool]:
    """True once a `<name> <sub>` process of the killed run (its TMPDIR) is in /proc."""

    def check() -> bool:
        return any(
            Path(p.argv[0]).name == name and sub in p.argv[1:3] for p in leftovers.tool_processes(ctx.run_tmp)
        )

    return check


def arm(ctx: Setup, point: str) -> Callable[..., None]:
    """Prepare the kill point; returns a function that waits until the run is at it."""
    if point == "bake":
        check = tool_of_run(ctx, "packer", "build")
    elif point == "plan":
        check = tool_of_run(ctx, "terraform", "plan")
    elif point == "apply-start":
        check = tool_of_run(ctx, "terraform", "apply")
    else:
        rule = "CreateLaunchTemplateVersion" if point == "launch-template-version" else "PUT *.tfstate"
        seen = ctx.proxy.delay(rule, HOLD_SECONDS)
        check = seen.is_set

    def wait(seconds: float, running: Callable[[], object] = lambda: True) -> None:
        """Until the run is at the point; `running` raises (or is falsy) once the run has ended."""

        def at_or_ended() -> bool:
            if check():
                return True
            assert running(), f"the run ended before {point}"
            return False

        wait_for(at_or_ended, seconds, f"the run to reach {point}", interval=0.05)

    return wait


def next_runs_converge(ctx: Setup, request: Any, point: str) -> str:
    """The next rollout completes (healing what the killed one left), then a further one is converged."""
    from flows.rollout import ami_rollout

    started = time.monotonic()
    nxt = ami_rollout(request, ctx.backend_block, ctx.aws_block)
    took = time.monotonic() - started
    assert nxt.verified is not None, f"{point}: the next run did not verify: {nxt}"
    assert nxt.apply.reason in {"applied", "refreshed", "no changes", "converged"}, nxt.apply.reason
    assert ctx.stack.state_vs_aws() == [], f"{point}: state and AWS differ after the next run"
    assert not ctx.stack.lock_exists(), f"{point}: lock left after the next run"
    assert nxt.verified.latest_image_id == nxt.bake.ami_id == ctx.stack.latest_image()
    again = ami_rollout(request, ctx.backend_block, ctx.aws_block)
    assert again.apply.reason == "converged" and again.bake.reused, (point, again.apply.reason)
    ctx.note(f"{point}: next run {nxt.apply.reason} in {took:.0f}s, then converged")
    return nxt.apply.reason


ROLLOUT_SCRIPT = textwrap.dedent("""
    import sys
    from flows.rollout import RolloutRequest, ami_rollout
    ami_rollout(RolloutRequest.model_validate_json(sys.argv[1]), sys.argv[2], sys.argv[3])
""")


APPLY_SCRIPT = textwrap.dedent("""
    import sys
    from flows.apply import StackRequest, apply_stack
    outcome = apply_stack(StackRequest.model_validate_json(sys.argv[1]), sys.argv[2], sys.argv[3])
    print("apply-stack outcome:", outcome.reason, flush=True)
""")


def start_process(
    ctx: Setup, request: Any, log: Path, script: str = ROLLOUT_SCRIPT, run_tmp: Path | None = None
) -> subprocess.Popen:
    """The rollout (or `script`: APPLY_SCRIPT) in a flow process of its own (what a worker runs), with the
    run's TMPDIR (`run_tmp`, by default the setup's)."""
    return subprocess.Popen(
        [sys.executable, "-c", script, request.model_dump_json(), ctx.backend_block, ctx.aws_block],
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(run_tmp or ctx.run_tmp)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def served(ctx: Setup, log: Path) -> Iterator[str]:
    """ami-rollout served from a runner process of its own (flow runs inherit the run's TMPDIR); yields
    the deployment's name."""
    from prefect.client.orchestration import get_client

    name = f"kp-{ctx.uid}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.kill_points", name],
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(ctx.run_tmp), "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def registered() -> bool:
        assert proc.poll() is None, f"serve exited: {log.read_text()[-3000:]}"
        try:
            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(f"ami-rollout/{name}")
            return True
        except Exception:  # noqa: BLE001 - not registered yet
            return False

    try:
        wait_for(registered, 90, "the served ami-rollout deployment", interval=0.5)
        yield f"ami-rollout/{name}"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


if __name__ == "__main__":
    from flows.rollout import ami_rollout

    ami_rollout.serve(name=sys.argv[1], pause_on_shutdown=False)
