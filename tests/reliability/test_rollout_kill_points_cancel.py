"""Fault: a real, served ami-rollout cancelled through the Prefect API (as a user does it in the UI) at
each kill point of tests/reliability/kill_points.py, one after the other on one stack; after each, the
invariants of tests/reliability/invariants.py: no tool left after its graceful stop, the lock free, the
state equal to AWS, the next run completes and a further one is converged.

One known limit: a cancel while the provider's CreateLaunchTemplateVersion is in flight may leave AWS one
launch template version ahead of the state (Terraform's graceful stop does not record a call it did not
see finish). The next run's converged check sees that, applies refresh-only (`refreshed`), and converges.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import kill_points as kp

pytestmark = pytest.mark.reliability


def _cancel(run_id, seconds: float = 180) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    from tests.reliability.helpers import wait_for

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(), force=True)

        def cancelled() -> bool:
            state = client.read_flow_run(run_id).state
            return bool(state and state.type == StateType.CANCELLED)

        wait_for(cancelled, seconds, "the run to be cancelled", interval=0.5)


def _not_final(run_id, log: Path) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert not (state and state.is_final()), f"run {state}; served log:\n{log.read_text()[-4000:]}"
    return True


def test_rollout_cancelled_at_each_kill_point_then_converges(blocks, sandbox_env, workdir: Path) -> None:
    from prefect.deployments import run_deployment

    with kp.setup(sandbox_env, workdir) as ctx, kp.served(ctx, workdir / "served.log") as deployment:
        for point, instance_type in kp.KILL_POINTS:
            request = ctx.request(instance_type)
            at_point = kp.arm(ctx, point)
            run = run_deployment(
                deployment,
                parameters={
                    "request": request.model_dump(mode="json"),
                    "backend_block": ctx.backend_block,
                    "aws_block": ctx.aws_block,
                },
                timeout=0,
            )
            try:
                at_point(300, lambda: _not_final(run.id, workdir / "served.log"))  # noqa: B023
                _cancel(run.id)
            finally:
                ctx.proxy.clear()
            kp.wait_no_tools(ctx.run_tmp, 120)  # packer's clean-up / terraform's graceful stop included
            assert not ctx.stack.lock_exists(), f"{point}: the cancelled run left its lock"
            differences = ctx.stack.state_vs_aws()
            if point == "launch-template-version":
                # the known limit (module docstring): at most AWS one version ahead; the next run heals it
                ahead = ("latest version", "image of the latest")
                assert all(d.startswith(ahead) for d in differences), differences
                ctx.note(f"{point}: after the cancel: {differences or 'state equals AWS'}")
            else:
                assert differences == [], f"{point}: state and AWS differ after the cancel"
            reason = kp.next_runs_converge(ctx, request, point)
            if point == "launch-template-version" and differences:
                assert reason == "refreshed", reason
    print("\n".join(ctx.log))
