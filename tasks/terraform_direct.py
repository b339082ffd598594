"""The one-process apply (issue 17): when nobody must see the plan before it is applied, apply-stack plans
and applies in one `terraform apply -auto-approve -json` (tools/terraform_stream.py reads it): one init,
one process, no `show` and no `output`. The plan artifact is built from its `planned_change` and
`change_summary` messages, the outputs from its `outputs` message.

The saved-plan path (plan -out, show, approval, apply of exactly that plan) stays whenever a person or a
policy must see the plan first, or the plan itself is needed (`direct_refusal` says which):

- approval is required: a person sees the plan before it is applied;
- the stack has policies (infra/policies): they check the plan before it is applied;
- a destroy: it is shown before anything is deleted;
- a rollback restore is armed (`restore_on_rollback`, ami-rollout): it reads the before-values of the plan;
- the stack declares a sensitive output: the `-json` stream withholds its value;
- a dead run left traces (a workspace, a running terraform, a stale lock, a holder record): an apply it
  left half-done may have made objects to adopt, and those only show in a plan.

Both paths hold the same slot, write the same holder record next to the lock, use the same workspace and
init, record the converged state and write the same one audit event (`record_applied`).

Known gap: drift (objects changed outside Terraform) is saved by the apply but not shown in the artifact:
the stream's `resource_drift` messages name the objects without values (the log lists them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK, resolve
from tasks.policy import has_policies
from tasks.terraform import ApplyResult, PlanSummary, record_applied
from tasks.terraform_context import init_workspace, state_bucket, state_key
from tasks.terraform_converged import record_converged
from tasks.terraform_lock import (
    holding_lock,
    name_holder,
    release_stale_lock,
    sweep_dead_workspaces,
    wait_for_terraform,
)
from tools import aws as aws_tool
from tools import terraform as tf
from tools.errors import StateLocked
from tools.process import default_logger

__all__ = ["apply_stack_direct", "clear_dead_runs", "direct_refusal", "one_process"]

ARTIFACT_NOTE = (
    "Planned and applied in one Terraform process (`terraform apply -json`): no person or policy had to "
    "see this plan first. Attribute values and drift are not shown (the stream carries no values)."
)


def direct_refusal(
    stack: str,
    *,
    approval_required: bool,
    destroy: bool = False,
    restore: Mapping[str, str] | None = None,
    traces: Sequence[str] = (),
) -> str | None:
    """Why the one-process apply is refused for this run (the saved-plan path then applies), or None."""
    if approval_required:
        return "approval is required: a person sees the plan before it is applied"
    if has_policies(stack):
        return "the stack has policies: they check the plan before it is applied"
    if destroy:
        return "a destroy: it is shown before anything is deleted"
    if restore:
        return "a rollback restore is armed: it needs the plan's values before the apply"
    if sensitive := tf.sensitive_outputs(tf.resolve_stack(stack)):
        return f"the stack declares sensitive outputs ({', '.join(sensitive)}): `apply -json` withholds them"
    if traces:
        return f"a dead run left traces ({'; '.join(traces)}): objects to adopt only show in a plan"
    return None


def clear_dead_runs(stack: str, backend_block: str, aws_block: str) -> list[str]:
    """Clean up after dead runs (call it holding the stack's slot): their workspaces swept, their terraform
    on the stack waited for, a provably stale lock released. Returns the traces found (empty: none)."""
    traces = []
    if swept := sweep_dead_workspaces():
        traces.append(f"{len(swept)} dead workspace(s) removed")
    if waited := wait_for_terraform(stack, backend_block, aws_block):
        traces.append(f"its terraform (pid {', '.join(map(str, waited))}) waited for")
    if released := release_stale_lock(stack, backend_block, aws_block):
        traces.append(f"its state lock {released.id} released")
    s3, backend, key = state_bucket(backend_block, aws_block, stack)
    if aws_tool.read_object(s3, backend.bucket, tf.holder_key(key)) is not None:
        traces.append("its holder record is left next to the lock")
    return traces


@task(name="terraform-apply-direct", cache_policy=NO_CACHE, task_run_name="apply {stack}")
def apply_stack_direct(
    stack: str,
    variables: dict[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> tuple[PlanSummary, ApplyResult]:
    """init + `apply -auto-approve -json` in a private workspace, under the state lock and our holder
    record; the plan as it was applied and the outputs. Never retried: it applies."""
    backend = resolve.terraform_backend(backend_block)
    workspace, runner, backend = init_workspace(
        stack, variables, state_key(backend, stack), backend_block, aws_block
    )
    try:
        with holding_lock(stack, backend_block, aws_block):
            stream = tf.apply_direct(runner, backend.lock_timeout_seconds)
    except StateLocked as exc:
        raise name_holder(exc, stack, backend_block, aws_block)  # noqa: B904 - it chains `exc` itself
    finally:
        tf.remove_workspace(workspace)
    summary = stream.summary(stack)
    if stream.drifted:
        default_logger().warning(
            "changed outside Terraform (saved by this apply, not shown in the plan artifact): %s",
            ", ".join(stream.drifted),
        )
    result = ApplyResult(stack=stack, outputs=stream.outputs)
    if summary.has_changes:
        record_applied(summary, result, path="one-process")
    return summary, result


def one_process(
    stack: str, variables: dict[str, str], backend_block: str, aws_block: str
) -> tuple[PlanSummary, ApplyResult, str]:
    """The one-process apply of apply-stack: apply, publish the plan artifact, record the converged state.
    Returns the plan, the outputs and the outcome's reason (applied, refreshed, no changes)."""
    summary, result = apply_stack_direct(stack, variables, backend_block, aws_block)
    create_markdown_artifact(
        key=f"plan-{tf.slug(stack)}",
        markdown=f"{summary.markdown()}\n\n{ARTIFACT_NOTE}",
        description=f"terraform plan of {stack}, applied in one process",
    )
    record_converged(stack, variables, backend_block, aws_block)
    reason = "applied" if summary.resources else "refreshed" if summary.has_changes else "no changes"
    default_logger().info("one-process apply of %s: %s (%s)", stack, reason, summary.counts())
    return summary, result, reason
