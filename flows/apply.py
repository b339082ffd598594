"""apply-stack: init -> plan -out -> summary artifact -> (approval) -> apply the saved plan; or, when no
person or policy must see the plan first, plan and apply in one `terraform apply -json` (the one-process
path, tasks/terraform_direct.py, which says when it is refused). The run logs which path it takes and why.

Nothing to do, nothing run: after an apply (or an empty plan) the inputs' fingerprint (every file of the
stacks tree, the variables, the backend) and the state's lineage and serial are written next to the state
(`<key>.converged.json`). A later run with the same fingerprint whose state is still that one (and not
locked) skips init/plan/show (~13 s of Terraform against moto) and returns the state's outputs, but only
after AWS confirmed what the state says about the stack's launch templates (latest/default version, image)
and auto scaling groups (launch template id/version): an apply whose state write was lost (AWS ahead of the
state) is not "converged". Other changes made outside Terraform are `detect-drift`'s job;
`skip_when_converged=False` forces a plan.

Policies (tasks/policy.py, docs/policies.md): a plan with resource changes is checked by the stack's rules
in infra/policies; a deny fails the run with PolicyDenied (plan discarded), a warning makes approval
required even when approval is auto.

Honest plans: drift (objects changed outside Terraform) and output changes count as changes. A plan with
no resource change but drift or outputs is applied with `terraform apply -refresh-only` (reason
`refreshed`): it saves the refreshed state, changes nothing in AWS, and so needs no approval.

One apply per stack at a time: a strict Prefect concurrency limit `tf-stack-<slug>` (created here if
missing) plus Terraform's own S3 lock with `-lock-timeout`.

Locks and dead runs: before each command that locks, the run writes a holder record next to the lock
(`<key>.holder.json`: host identity = boot id + hostname + pid namespace, its pid and start time, its flow
run id), removed afterwards. The next run, once it holds the stack's slot (no other run of our flows
works on the stack then): deletes the private workspaces of dead runs; waits (up to the backend's
`running_wait_seconds`, then TerraformStillRunning) while a dead run's terraform on this host still works
on the stack's state, never starting a second apply beside it; and releases the lock only when its holder
is provably dead: the record shares our process table (same boot, host and pid namespace), the lock is
younger than the record, the recorded process is gone and no terraform here works on the state (or the
record is this machine's before a reboot). Any other lock gives StateLocked naming the holder (Who,
Created, Operation, the record's flow run) after the backend's lock timeout. A first apply killed after
AWS created the auto scaling group / launch template but before the state was written leaves objects the
plan wants to create: they are imported (adopted, with a warning) and the plan is made again."""

from enum import StrEnum

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from pydantic import BaseModel, Field

import flows  # noqa: F401 - the engine fix (flows/engine.py), also when Prefect loads this file by path
from blocks import AWS_BLOCK, NOTIFY_BLOCK, TF_BACKEND_BLOCK
from tasks import approval as approvals
from tasks import stacks as tf
from tasks.approval import SUSPENDING_RUN, ApprovalInput, PendingPlan, suspending_here
from tasks.logs import default_logger
from tasks.notify import notify
from tasks.policy import PolicyReport, policy_gate, validate_policies
from tasks.preflight import validate_stack
from tasks.stack_slot import ensure_stack_limit, stack_slots
from tasks.task_runner import StoppingThreadPoolTaskRunner
from tasks.terraform import (
    ApplyResult,
    PlanSummary,
    apply_plan,
    discard_plan,
    plan_stack,
    stack_outputs,
)
from tasks.terraform_converged import converged_outputs, record_converged
from tasks.terraform_direct import clear_dead_runs, direct_refusal, one_process
from tools.errors import InvalidInput, NotificationFailed


class Approval(StrEnum):
    auto = "auto"
    required = "required"


class StackRequest(BaseModel):
    stack: str = Field("scalac/internal-prod/xwiki", description="Stack directory under infra/terraform")
    variables: dict[str, str] = Field(default_factory=dict, description="Non-secret Terraform variables")
    approval: Approval = Field(
        Approval.auto, description="auto: apply when the plan has changes; required: ask"
    )
    approval_timeout_seconds: int = Field(
        3600, ge=1, description="No answer within this time: nothing is applied"
    )
    restore_on_rollback: dict[str, str] = Field(
        default_factory=dict,
        description="variable -> `resource_address.attribute`: inside a Prefect transaction, if a later "
        "step fails after the apply, the stack is applied again with each variable set to the attribute's "
        "value before this apply (ami-rollout: ami_id -> aws_launch_template.xwiki-lt.image_id)",
    )
    notify_block: str | None = Field(
        NOTIFY_BLOCK,
        max_length=100,
        pattern=r"^([a-z0-9][a-z0-9-]{0,48}/)?[a-z0-9][a-z0-9-]{0,48}$",
        description="Notification block told when a plan waits for approval; empty: none",
    )
    skip_when_converged: bool = Field(
        True,
        description="Skip Terraform when these exact stack files and variables were applied last and the "
        "state is unchanged since (changes made outside Terraform are detect-drift's job)",
    )


class ApplyOutcome(BaseModel):
    stack: str
    plan: PlanSummary
    applied: bool = Field(description="The infrastructure was changed (a refresh-only apply is not)")
    reason: str = Field(
        description="applied, refreshed, converged, no changes, rejected, approval timed out, "
        "awaiting approval (the run suspends)"
    )
    result: ApplyResult | None = Field(
        None, description="Outputs after the apply, or the state's outputs when there was nothing to apply"
    )
    approved_by: str | None = Field(None, description="Who approved or rejected the plan (the form's name)")
    pending: PendingPlan | None = Field(None, description="The stored plan the run suspended for")


def apply(
    request: StackRequest, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK
) -> ApplyOutcome:
    """The apply steps, shared by apply-stack and ami-rollout."""
    stack = _checked(request)
    validate_stack(stack)  # pre-flight: terraform validate, before any plan
    log = default_logger()
    limit = ensure_stack_limit(stack)
    with stack_slots(limit):
        traces = clear_dead_runs(stack, backend_block, aws_block)
        suspending = SUSPENDING_RUN.get()
        if suspending is not None:  # resumed after a suspension for approval? then its answer decides
            resumed = _resume_pending(request, stack, suspending, backend_block, aws_block)
            if resumed is not None:
                return resumed
        if request.skip_when_converged:
            current = converged_outputs(stack, request.variables, backend_block, aws_block)
            if current is not None:
                log.info("converged: these inputs were applied last and the state is unchanged; no plan")
                empty = PlanSummary(stack=stack, has_changes=False)
                return ApplyOutcome(
                    stack=stack, plan=empty, applied=False, reason="converged", result=current
                )
        direct = _one_process(request, stack, traces, backend_block, aws_block)
        if direct is not None:
            return direct
        summary = plan_stack(stack, request.variables, backend_block, aws_block, keep_plan=True)
        create_markdown_artifact(
            key=f"plan-{tf.slug(stack)}",
            markdown=summary.markdown(),
            description=f"terraform plan of {stack}",
        )
        if not summary.has_changes:
            try:
                current = stack_outputs(summary, backend_block, aws_block)
            finally:
                discard_plan(summary)
            record_converged(stack, request.variables, backend_block, aws_block)
            log.info("no changes: nothing to apply")
            return ApplyOutcome(stack=stack, plan=summary, applied=False, reason="no changes", result=current)
        if summary.refresh_only:  # AWS ahead of the state, or outputs: save the state, change nothing
            result = apply_plan(summary, backend_block, aws_block)
            record_converged(stack, request.variables, backend_block, aws_block)
            log.info("refreshed: %s; the state now matches AWS (no infrastructure changed)", summary.counts())
            return ApplyOutcome(stack=stack, plan=summary, applied=False, reason="refreshed", result=result)
        policies = policy_gate(summary)  # deny: PolicyDenied, the plan discarded
        approval = request.approval
        if policies is not None and policies.warned and approval is Approval.auto:
            log.warning(
                "policy warnings (%s): approval is required", ", ".join(r.rule for r in policies.warned)
            )
            approval = Approval.required
        if approval is Approval.required and suspending is not None:
            pending = approvals.store_pending(
                summary,
                request.variables,
                suspending,
                request.approval_timeout_seconds,
                backend_block,
                aws_block,
            )
            return ApplyOutcome(
                stack=stack, plan=summary, applied=False, reason="awaiting approval", pending=pending
            )
        if approval is Approval.required:
            answer = _pause_here(summary, policies, request.approval_timeout_seconds)
            if answer is None:
                return ApplyOutcome(stack=stack, plan=summary, applied=False, reason="approval timed out")
            approvals.record_decision(stack, answer)
            if not answer.approved:
                discard_plan(summary)
                return ApplyOutcome(
                    stack=stack, plan=summary, applied=False, reason="rejected", approved_by=answer.approver
                )
        result = apply_plan(summary, backend_block, aws_block, request.restore_on_rollback or None)
        record_converged(stack, request.variables, backend_block, aws_block)
    return ApplyOutcome(
        stack=stack,
        plan=summary,
        applied=True,
        reason="applied",
        result=result,
        approved_by=answer.approver if approval is Approval.required else None,
    )


def _one_process(
    request: StackRequest, stack: str, traces: list[str], backend_block: str, aws_block: str
) -> ApplyOutcome | None:
    """Plan and apply in one process, or None (logged: why the saved-plan path applies instead)."""
    approval_required = request.approval is Approval.required
    refused = direct_refusal(
        stack, approval_required=approval_required, restore=request.restore_on_rollback, traces=traces
    )
    if refused is not None:
        default_logger().info("saved-plan apply: %s", refused)
        return None
    default_logger().info("one-process apply: no person or policy must see the plan first")
    summary, result, reason = one_process(stack, request.variables, backend_block, aws_block)
    return ApplyOutcome(stack=stack, plan=summary, applied=reason == "applied", reason=reason, result=result)


def _checked(request: StackRequest) -> str:
    """The stack's path under infra/terraform, once every input is checked (InvalidInput before any
    process): the stack, its variables, its policies and the rollback targets."""
    stack = tf.resolve_stack(request.stack).relative_to(tf.TERRAFORM_DIR).as_posix()
    tf.check_variables(tf.resolve_stack(stack), request.variables)
    validate_policies(stack)  # infra/policies
    for variable, target in request.restore_on_rollback.items():
        if variable not in tf.declared_variables(tf.resolve_stack(stack)) or "." not in target:
            raise InvalidInput(
                f"restore_on_rollback {variable!r} -> {target!r}: needs a declared variable and a "
                "`resource_address.attribute`"
            )
    return stack


def _pause_here(
    summary: PlanSummary, policies: PolicyReport | None, timeout_seconds: int
) -> ApprovalInput | None:
    """Pause this run (its process waits) for the answer; None when none came in time (plan discarded)."""
    try:
        return pause_flow_run(
            wait_for_input=ApprovalInput.with_initial_data(
                description=summary.markdown()
                + (f"\n\n{policies.markdown()}" if policies else "")
                + "\n\nApprove to apply exactly this plan."
            ),
            timeout=timeout_seconds,
        )
    except FlowPauseTimeout:
        discard_plan(summary)
        default_logger().warning("no approval within %ss: nothing applied", timeout_seconds)
        return None


def _resume_pending(
    request: StackRequest, stack: str, run_id: str, backend_block: str, aws_block: str
) -> ApplyOutcome | None:
    """After a suspension for approval: the answer decides (rejected: nothing; approved: exactly the
    stored plan, if the state has not moved). None: nothing was waiting, or the plan went stale and the
    stack is planned (and asked for) again."""
    approvals.sweep_expired(stack, backend_block, aws_block, keep=run_id)
    pending = approvals.load_pending(stack, run_id, backend_block, aws_block)
    if pending is None:
        return None
    answer = approvals.answer_of(pending)
    if answer is None:
        return ApplyOutcome(
            stack=stack, plan=pending.summary, applied=False, reason="awaiting approval", pending=pending
        )
    approvals.record_decision(stack, answer, pending)
    decision = (
        f"**{'approved' if answer.approved else 'rejected'}** by {answer.approver or '(no name given)'}"
        + (f": {answer.reason}" if answer.reason else "")
        + f" (plan sha256 `{pending.checksum[:16]}`, state serial {pending.serial})"
    )
    create_markdown_artifact(
        key=f"plan-{tf.slug(stack)}",
        markdown=pending.summary.markdown() + "\n\n" + decision,
        description=f"terraform plan of {stack}, {decision.split(' by ')[0].strip('*')}",
    )
    if not answer.approved:
        approvals.drop_pending(pending, backend_block, aws_block)
        return ApplyOutcome(
            stack=stack, plan=pending.summary, applied=False, reason="rejected", approved_by=answer.approver
        )
    try:
        summary = approvals.load_approved_plan(pending, backend_block, aws_block)
    finally:
        approvals.drop_pending(pending, backend_block, aws_block)
    if summary is None:
        return None  # stale: plan again, ask again
    policy_gate(summary)  # the rules as they are now, over exactly this plan (deny: PolicyDenied)
    result = apply_plan(summary, backend_block, aws_block, request.restore_on_rollback or None)
    record_converged(stack, request.variables, backend_block, aws_block)
    return ApplyOutcome(
        stack=stack, plan=summary, applied=True, reason="applied", result=result, approved_by=answer.approver
    )


def wait_for_approval(outcome: ApplyOutcome, timeout_seconds: int, notify_block: str | None) -> None:
    """Tell people (the notification block: the plan's changes and the run's link), then suspend this
    deployment run until someone answers the plan's form: the process exits and holds nothing; the resumed
    run starts again from the top and `apply` finds the answer. No answer within `timeout_seconds`: the
    server refuses the resume and fails the run (nothing applied)."""
    pending = outcome.pending
    if pending is None:
        return
    log = default_logger()
    log.warning(
        "plan of %s waits for approval (%s): suspending; answer within %ss in the run's form",
        outcome.stack,
        outcome.plan.counts(),
        timeout_seconds,
    )
    if notify_block:
        try:
            notify(
                notify_block,
                "approval needed",
                subject=f"devops-flows: approval needed for {outcome.stack}",
                body=approvals.notice(pending, timeout_seconds),
            )
        except NotificationFailed as exc:  # the plan still waits: the form is in the UI
            log.error("%s", exc)
    suspend_flow_run(
        wait_for_input=ApprovalInput.with_initial_data(
            description=pending.summary.markdown() + "\n\nApprove to apply exactly this plan."
        ),
        timeout=timeout_seconds,
        key=pending.key,
    )


@flow(name="apply-stack", log_prints=True, task_runner=StoppingThreadPoolTaskRunner())
def apply_stack(
    request: StackRequest = StackRequest(),  # noqa: B008
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> ApplyOutcome:
    """Plan a Terraform stack and apply the saved plan (after approval when required)."""
    with suspending_here():
        outcome = apply(request, backend_block, aws_block)
        if outcome.reason == "awaiting approval":
            wait_for_approval(outcome, request.approval_timeout_seconds, request.notify_block)
    return outcome
