"""apply-stack: init -> plan -out -> summary artifact -> (approval) -> apply the saved plan.

One apply per stack at a time: a strict Prefect concurrency limit `tf-stack-<slug>` (created here if
missing) plus Terraform's own S3 lock with `-lock-timeout`."""

from __future__ import annotations

from enum import StrEnum

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK
from tasks.terraform import ApplyResult, PlanSummary, apply_plan, discard_plan, ensure_stack_limit, plan_stack
from tools import terraform as tf
from tools.process import default_logger


class Approval(StrEnum):
    auto = "auto"
    required = "required"


class ApprovalInput(RunInput):
    approved: bool = Field(False, description="Apply this plan?")
    reason: str = Field("", description="Why (kept in the run's logs)")


class StackRequest(BaseModel):
    stack: str = Field("scalac/internal-prod/xwiki", description="Stack directory under infra/terraform")
    variables: dict[str, str] = Field(default_factory=dict, description="Non-secret Terraform variables")
    approval: Approval = Field(
        Approval.auto, description="auto: apply when the plan has changes; required: ask"
    )
    approval_timeout_seconds: int = Field(
        3600, ge=1, description="No answer within this time: nothing is applied"
    )


class ApplyOutcome(BaseModel):
    stack: str
    plan: PlanSummary
    applied: bool
    reason: str
    result: ApplyResult | None = None


def apply(
    request: StackRequest, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK
) -> ApplyOutcome:
    """The apply steps, shared by apply-stack and ami-rollout."""
    stack = tf.resolve_stack(request.stack).relative_to(tf.TERRAFORM_DIR).as_posix()
    tf.check_variables(tf.resolve_stack(stack), request.variables)
    log = default_logger()
    limit = ensure_stack_limit(stack)
    with concurrency(limit, occupy=1, strict=True):
        summary = plan_stack(stack, request.variables, backend_block, aws_block, keep_plan=True)
        create_markdown_artifact(
            key=f"plan-{tf.slug(stack)}",
            markdown=summary.markdown(),
            description=f"terraform plan of {stack}",
        )
        if not summary.has_changes:
            discard_plan(summary)
            log.info("no changes: nothing to apply")
            return ApplyOutcome(stack=stack, plan=summary, applied=False, reason="no changes")
        if request.approval is Approval.required:
            try:
                answer = pause_flow_run(
                    wait_for_input=ApprovalInput.with_initial_data(
                        description=summary.markdown() + "\n\nApprove to apply exactly this plan."
                    ),
                    timeout=request.approval_timeout_seconds,
                )
            except FlowPauseTimeout:
                discard_plan(summary)
                log.warning("no approval within %ss: nothing applied", request.approval_timeout_seconds)
                return ApplyOutcome(stack=stack, plan=summary, applied=False, reason="approval timed out")
            if not answer.approved:
                discard_plan(summary)
                log.warning(
                    "plan rejected%s: nothing applied", f" ({answer.reason})" if answer.reason else ""
                )
                return ApplyOutcome(stack=stack, plan=summary, applied=False, reason="rejected")
            log.info("plan approved%s", f" ({answer.reason})" if answer.reason else "")
        result = apply_plan(summary, backend_block, aws_block)
    return ApplyOutcome(stack=stack, plan=summary, applied=True, reason="applied", result=result)


@flow(name="apply-stack", log_prints=True)
def apply_stack(
    request: StackRequest = StackRequest(),  # noqa: B008
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> ApplyOutcome:
    """Plan a Terraform stack and apply the saved plan (after approval when required)."""
    return apply(request, backend_block, aws_block)
