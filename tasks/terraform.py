"""Terraform tasks: plan a stack (kept for apply or thrown away), apply a saved plan, read outputs, and
the one audit event of an apply (`record_applied`, whichever path applied: this one or the one-process
apply of tasks/terraform_direct.py). The destroy is in tasks/terraform_destroy.py.

Blocks are loaded inside the tasks: the TerraformBackend (state bucket, key prefix, S3 endpoint, lock
timeout) and the AwsCredentials (keys go to Terraform as environment only; the endpoint, when set,
switches the stack's provider to the sandbox through TF_VAR_aws_endpoint).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK, resolve
from tasks import audit
from tasks.stack_slot import ensure_stack_limit, stack_limit_name, stack_slots
from tasks.task_runner import cancelling
from tasks.terraform_adopt import adopt_orphans
from tasks.terraform_context import init_workspace, state_key
from tasks.terraform_context import runner_for as _runner
from tasks.terraform_lock import holding_lock, name_holder, release_stale_lock
from tools import terraform as tf
from tools.errors import ProcessCancelled, StateLocked, TerraformError, retry_if_transient
from tools.process import default_logger
from tools.terraform import OutputValue, PlanSummary

__all__ = [
    "ApplyResult",
    "PlanSummary",
    "apply_plan",
    "discard_plan",
    "ensure_stack_limit",
    "plan_stack",
    "record_applied",
    "release_stale_lock",
    "stack_limit_name",
    "stack_outputs",
    "state_key",
]


class ApplyResult(BaseModel):
    stack: str
    outputs: dict[str, OutputValue] = Field(default_factory=dict)

    def value(self, name: str):  # noqa: ANN201 - any JSON value
        out = self.outputs.get(name)
        return out.value if out else None


def plan_now(
    stack: str,
    variables: Mapping[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
    keep_plan: bool = False,
    destroy: bool = False,
    lock: bool = True,
) -> PlanSummary:
    """init + plan + show in a private workspace (the body of `plan_stack`, callable outside a task).
    lock=False plans without the state lock (read-only checks; see `tf.plan`)."""
    backend = resolve.terraform_backend(backend_block)
    stack_dir = tf.resolve_stack(stack)
    stack = stack_dir.relative_to(tf.TERRAFORM_DIR).as_posix()
    workspace, runner, backend = init_workspace(
        stack, variables, state_key(backend, stack), backend_block, aws_block
    )
    try:
        if not lock:
            tf.plan(runner, backend.lock_timeout_seconds, destroy=destroy, lock=False)
            shown = tf.show_plan(runner)
        else:
            with holding_lock(stack, backend_block, aws_block):
                tf.plan(runner, backend.lock_timeout_seconds, destroy=destroy)
            shown = tf.show_plan(runner)
            adopted = (
                []
                if destroy
                else adopt_orphans(runner, shown, backend.lock_timeout_seconds, backend_block, aws_block)
            )
            if adopted:
                with holding_lock(stack, backend_block, aws_block):
                    tf.plan(runner, backend.lock_timeout_seconds)
                shown = tf.show_plan(runner)
        summary = tf.summarize_plan(stack, shown)
        if keep_plan:
            tf.save_plan_json(workspace, shown)  # the policies read it (tasks/policy.py)
    except StateLocked as exc:
        tf.remove_workspace(workspace)
        raise name_holder(exc, stack, backend_block, aws_block)  # noqa: B904 - it chains `exc` itself
    except BaseException:
        tf.remove_workspace(workspace)
        raise
    if keep_plan:
        summary.workspace = workspace
    else:
        tf.remove_workspace(workspace)
    default_logger().info("plan %s: %s", stack, summary.counts())
    return summary


@task(
    name="terraform-plan",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    task_run_name="plan {stack}",
)
def plan_stack(
    stack: str,
    variables: dict[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
    keep_plan: bool = False,
    lock: bool = True,
) -> PlanSummary:
    """`terraform init` + `plan` of a stack under infra/terraform; never applies.

    With keep_plan=True the workspace holding the saved plan is kept for `apply_plan` (its location is in
    `summary.workdir`); otherwise it is deleted. Plans are read-only, so transient errors are retried.
    lock=False: `-lock=false`, for checks that must never make an apply wait or fail (detect-drift).
    """
    return plan_now(stack, variables, backend_block, aws_block, keep_plan=keep_plan, lock=lock)


class RestoreSpec(BaseModel):
    """What re-applying the previous values of a stack means: the same stack, the variables of the
    applied plan with the restored ones set to their values before the apply."""

    stack: str
    variables: dict[str, str]
    restored: dict[str, str] = Field(description="variable -> value before the apply")
    backend_block: str
    aws_block: str


def restore_spec(
    summary: PlanSummary, restore: dict[str, str], backend_block: str, aws_block: str
) -> RestoreSpec | None:
    """From `restore` (variable -> `resource_address.attribute`) and the plan's before-values: the
    variables that put those attributes back. None when the plan changes none of them (or creates them)."""
    if not restore or summary.workspace is None:
        return None
    variables = json.loads((Path(summary.workspace.path) / tf.VAR_FILE).read_text() or "{}")
    restored: dict[str, str] = {}
    for variable, target in restore.items():
        address, _, attribute = target.rpartition(".")
        res = summary.resource(address)
        change = next((c for c in (res.changed if res else []) if c.name == attribute), None)
        if change is not None and isinstance(change.old, str) and change.old:
            restored[variable] = change.old
    if not restored:
        return None
    return RestoreSpec(
        stack=summary.stack,
        variables={**variables, **restored},
        restored=restored,
        backend_block=backend_block,
        aws_block=aws_block,
    )


def restore_now(spec: RestoreSpec, hold_slot: bool = True) -> ApplyResult | None:
    """Plan and apply the stack with the previous values (the rollback). With hold_slot, inside the
    stack's strict concurrency slot (the caller does not hold it)."""
    log = default_logger()
    log.warning("rollback: re-applying %s with the previous values %s", spec.stack, spec.restored)

    def _do() -> ApplyResult | None:
        summary = plan_now(spec.stack, spec.variables, spec.backend_block, spec.aws_block, keep_plan=True)
        if not summary.resources:  # drift or outputs at most: the infrastructure has the previous values
            discard_plan.fn(summary)
            log.warning("rollback: %s already has the previous values", spec.stack)
            return None
        result = apply_plan.fn(summary, spec.backend_block, spec.aws_block, restoring=spec.restored)
        log.warning("rollback of %s applied: %s", spec.stack, spec.restored)
        return result

    if not hold_slot:
        return _do()
    with stack_slots(ensure_stack_limit.fn(spec.stack)):
        return _do()


def _restore_on_rollback(txn: Transaction) -> None:
    """on_rollback of terraform-apply: a later step of the enclosing transaction failed. Not on a cancel:
    the process is about to be stopped, an apply started now would be killed half-way; the rerun decides."""
    raw = txn.get("restore", None)
    if raw and cancelling():
        default_logger().warning("cancelled: %s is left as applied; the next run decides", raw.get("stack"))
        return
    if raw:
        restore_now(RestoreSpec.model_validate(raw), hold_slot=True)


@task(
    name="terraform-apply",
    cache_policy=NO_CACHE,
    task_run_name="apply {summary.stack}",
)
def apply_plan(
    summary: PlanSummary,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
    restore: dict[str, str] | None = None,
    restoring: dict[str, str] | None = None,
) -> ApplyResult:
    """Apply exactly the saved plan of `summary` (never a fresh plan; never retried), then read outputs.
    A plan that changes no resource (`summary.refresh_only`: drift, outputs) is applied with
    `apply -refresh-only`: it saves the refreshed state and changes nothing in AWS.

    `restore` (variable -> `resource_address.attribute`, e.g. `{"ami_id":
    "aws_launch_template.xwiki-lt.image_id"}`) arms a rollback: if a later task of the enclosing Prefect
    `transaction()` fails, this task's on_rollback re-applies the stack with those variables set to the
    attributes' values before this apply. If the apply itself fails part-way (it may have changed them
    already), the previous values are re-applied here before the error is raised. `restoring` marks the
    apply of a rollback (the values it puts back), for the audit event.
    """
    if summary.workspace is None:
        raise ValueError("apply_plan needs a summary from plan_stack(keep_plan=True)")
    workspace = summary.workspace
    spec = restore_spec(summary, restore or {}, backend_block, aws_block)
    try:
        runner, backend = _runner(workspace, backend_block, aws_block)
        try:
            with holding_lock(summary.stack, backend_block, aws_block):
                if summary.refresh_only:
                    tf.apply_refresh_only(runner, backend.lock_timeout_seconds)
                else:
                    tf.apply(runner, backend.lock_timeout_seconds)
        except StateLocked as exc:
            raise name_holder(exc, summary.stack, backend_block, aws_block)  # noqa: B904 - it chains `exc` itself
        except TerraformError as exc:
            if spec is not None and not isinstance(exc, (StateLocked, ProcessCancelled)):
                default_logger().error(
                    "apply of %s failed part-way: restoring %s", summary.stack, spec.restored
                )
                tf.remove_workspace(workspace)
                try:
                    restore_now(spec, hold_slot=False)  # our caller holds the stack's slot
                except Exception as again:  # noqa: BLE001 - the apply's own error is the one to raise
                    default_logger().error("rollback of %s failed too: %s", summary.stack, again)
            raise
        result = ApplyResult(stack=summary.stack, outputs=tf.outputs(runner))
    finally:
        tf.remove_workspace(workspace)
    record_applied(summary, result, restoring=restoring)
    if spec is not None:
        txn = get_transaction()
        if txn is not None:
            txn.set("restore", spec.model_dump())
    return result


apply_plan.on_rollback(_restore_on_rollback)


def record_applied(
    summary: PlanSummary,
    result: ApplyResult,
    restoring: dict[str, str] | None = None,
    path: str = "saved-plan",
) -> None:
    """The audit event of an apply (`devops.stack.applied`, or `rolled-back` for a rollback's): the
    counts, the changed addresses, the launch template and auto scaling group it left, and the `path`
    (saved-plan or one-process) it took."""
    audit.record(
        "stack",
        "rolled-back" if restoring else "applied",
        summary.stack,
        path=path,
        add=summary.add,
        change=summary.change,
        destroy=summary.destroy,
        refresh_only=summary.refresh_only,
        changed=[r.address for r in summary.resources],
        restored=restoring,
        launch_template_id=result.value("launch_template_id"),
        launch_template_version=result.value("launch_template_latest_version"),
        autoscaling_group=result.value("autoscaling_group_name"),
    )


@task(name="terraform-outputs", cache_policy=NO_CACHE, task_run_name="outputs {summary.stack}")
def stack_outputs(
    summary: PlanSummary, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK
) -> ApplyResult:
    """`terraform output -json` from the state, in the initialised workspace of a kept plan."""
    if summary.workspace is None:
        raise ValueError("stack_outputs needs a summary from plan_stack(keep_plan=True)")
    runner, _ = _runner(summary.workspace, backend_block, aws_block)
    return ApplyResult(stack=summary.stack, outputs=tf.outputs(runner))


@task(name="terraform-discard-plan", cache_policy=NO_CACHE)
def discard_plan(summary: PlanSummary) -> None:
    """Delete the workspace of a plan that will not be applied."""
    if summary.workspace is not None:
        tf.remove_workspace(summary.workspace)
