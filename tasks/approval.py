"""Durable approval: a saved plan waits for a person in S3, next to the state, not in a process.

A deployment run whose plan needs approval stores the saved plan (`<state key dir>/pending/<run>.tfplan`)
with a record (`.json`: its sha256, the state's lineage and serial it was made against, the variables,
the plan summary) and suspends (`suspend_flow_run` with a typed form: approve or reject, the approver's
name, a comment), so no process and no stack slot is held while it waits. Resumed, the run starts again
from the top, finds its record and the answer in the form, and:
- rejected: the record and plan are deleted, nothing is applied;
- approved: the plan is loaded into a fresh initialised workspace, its checksum checked, and applied only
  when the state still has the lineage and serial it was made against; otherwise the stack is planned
  again and the run asks again (a stale plan is never applied; Terraform itself would refuse it too).
No answer within the timeout: the server refuses the resume and fails the run; nothing is applied, and
the next run of the stack deletes the expired record. The approver and the comment go to the plan
artifact and to the audit trail (`devops.stack.approved` / `devops.stack.rejected`); an open-source
Prefect server has no user accounts, so the typed name is the record of who approved.

Which run suspends: the top-level deployment run (apply-stack itself, or ami-rollout around it), marked
with `suspending_here()`; a run without a deployment cannot be resumed in another process and keeps the
in-process pause.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import BaseModel, Field

from tasks import audit
from tasks.policy import has_policies
from tasks.terraform_context import init_workspace, state_bucket
from tools import aws as aws_tool
from tools import terraform as tf
from tools.errors import ApprovalFailed
from tools.process import default_logger
from tools.terraform import PlanSummary
from tools.terraform_converged import state_head

SUSPENDING_RUN: ContextVar[str | None] = ContextVar("devops_suspending_run", default=None)


class ApprovalInput(RunInput):
    """The approval form of a waiting plan."""

    approved: bool = Field(False, description="Apply exactly this plan?")
    approver: str = Field("", max_length=80, description="Your name (recorded with the decision)")
    reason: str = Field("", max_length=500, description="Comment (recorded with the decision)")


class PendingPlan(BaseModel):
    """The record of a plan waiting for approval."""

    stack: str
    run_id: str = Field(description="The flow run that suspended for it")
    key: str = Field(description="The suspension's pause key")
    checksum: str = Field(description="sha256 of the saved plan file")
    lineage: str | None = None
    serial: int | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    summary: PlanSummary
    deadline: float = Field(description="Unix time after which no answer is accepted")

    @property
    def form_key(self) -> str:
        """Where the server keeps the answer of this suspension (Prefect's keyset of a Suspended state)."""
        return f"suspended-{self.key}-response"


@contextmanager
def suspending_here() -> Iterator[str | None]:
    """Mark the current flow run as the one that suspends for approvals below it, when it is a deployment
    run (only those can be resumed in a new process). Yields its id, or None."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None or run.deployment_id is None or SUSPENDING_RUN.get() is not None:
        yield SUSPENDING_RUN.get()
        return
    token = SUSPENDING_RUN.set(str(run.id))
    try:
        yield str(run.id)
    finally:
        SUSPENDING_RUN.reset(token)


def _keys(backend_key: str, run_id: str) -> tuple[str, str]:
    base = f"{backend_key.rsplit('/', 1)[0]}/pending/{run_id}"
    return f"{base}.json", f"{base}.tfplan"


@task(name="store-pending-plan", cache_policy=NO_CACHE, task_run_name="store plan of {summary.stack}")
def store_pending(
    summary: PlanSummary,
    variables: dict[str, str],
    run_id: str,
    timeout_seconds: int,
    backend_block: str,
    aws_block: str,
) -> PendingPlan:
    """Store the saved plan and its record next to the state; the local workspace goes."""
    if summary.workspace is None:
        raise ValueError("store_pending needs a summary from plan_stack(keep_plan=True)")
    s3, backend, key = state_bucket(backend_block, aws_block, summary.stack)
    plan = (Path(summary.workspace.path) / tf.PLAN_FILE).read_bytes()
    head = state_head(aws_tool.read_object(s3, backend.bucket, key))
    checksum = hashlib.sha256(plan).hexdigest()
    pending = PendingPlan(
        stack=summary.stack,
        run_id=run_id,
        key=f"approve-{checksum[:16]}",
        checksum=checksum,
        lineage=head.lineage if head else None,
        serial=head.serial if head else None,
        variables=variables,
        summary=summary.model_copy(update={"workspace": None}),
        deadline=time.time() + timeout_seconds,
    )
    record_key, plan_key = _keys(key, run_id)
    aws_tool.write_object(s3, backend.bucket, plan_key, plan)
    aws_tool.write_object(s3, backend.bucket, record_key, pending.model_dump_json().encode())
    tf.remove_workspace(summary.workspace)
    default_logger().info(
        "plan of %s stored for approval (sha256 %s, state serial %s); the run suspends: answer in the UI",
        summary.stack,
        checksum[:12],
        pending.serial,
    )
    return pending


def load_pending(stack: str, run_id: str, backend_block: str, aws_block: str) -> PendingPlan | None:
    s3, backend, key = state_bucket(backend_block, aws_block, stack)
    raw = aws_tool.read_object(s3, backend.bucket, _keys(key, run_id)[0])
    return PendingPlan.model_validate_json(raw) if raw else None


def drop_pending(pending: PendingPlan, backend_block: str, aws_block: str) -> None:
    s3, backend, key = state_bucket(backend_block, aws_block, pending.stack)
    for object_key in _keys(key, pending.run_id):
        aws_tool.delete_object(s3, backend.bucket, object_key)


def sweep_expired(stack: str, backend_block: str, aws_block: str, keep: str | None = None) -> list[str]:
    """Delete the records and plans of approvals whose deadline passed (the server refuses their resume),
    except run `keep`'s own; returns the run ids."""
    s3, backend, key = state_bucket(backend_block, aws_block, stack)
    prefix = f"{key.rsplit('/', 1)[0]}/pending/"
    listed = s3.list_objects_v2(Bucket=backend.bucket, Prefix=prefix).get("Contents") or []
    expired = []
    for item in listed:
        if not item["Key"].endswith(".json"):
            continue
        raw = aws_tool.read_object(s3, backend.bucket, item["Key"])
        pending = PendingPlan.model_validate_json(raw) if raw else None
        if pending is not None and pending.run_id != keep and pending.deadline < time.time():
            drop_pending(pending, backend_block, aws_block)
            expired.append(pending.run_id)
    if expired:
        default_logger().info("deleted the expired approval requests of runs %s", ", ".join(expired))
    return expired


def answer_of(pending: PendingPlan) -> ApprovalInput | None:
    """The answer given in the suspended run's form, or None when there is none (yet)."""
    from prefect.input.actions import read_flow_run_input

    value = read_flow_run_input(pending.form_key, flow_run_id=UUID(pending.run_id))
    return ApprovalInput(**value) if value else None


@task(name="load-approved-plan", cache_policy=NO_CACHE, task_run_name="load approved plan of {pending.stack}")
def load_approved_plan(pending: PendingPlan, backend_block: str, aws_block: str) -> PlanSummary | None:
    """The approved plan in a fresh initialised workspace, ready for `apply_plan`; None when the state
    moved since the plan (stale: plan again and ask again). ApprovalFailed when the stored plan is not
    the one approved (checksum)."""
    s3, backend, key = state_bucket(backend_block, aws_block, pending.stack)
    head = state_head(aws_tool.read_object(s3, backend.bucket, key))
    now = (head.lineage, head.serial) if head else (None, None)
    if now != (pending.lineage, pending.serial):
        default_logger().warning(
            "the state of %s changed since the plan was made (serial %s -> %s): planning again",
            pending.stack,
            pending.serial,
            now[1],
        )
        return None
    plan = aws_tool.read_object(s3, backend.bucket, _keys(key, pending.run_id)[1]) or b""
    if hashlib.sha256(plan).hexdigest() != pending.checksum:
        raise ApprovalFailed(
            f"the stored plan of {pending.stack} is not the approved one (sha256 differs): nothing applied",
            hint="run the deployment again to plan and ask again",
        )
    workspace, runner, backend = init_workspace(
        pending.stack, pending.variables, key, backend_block, aws_block
    )
    try:
        (Path(workspace.path) / tf.PLAN_FILE).write_bytes(plan)
        if has_policies(pending.stack):  # the gate reads exactly this plan again before the apply
            tf.save_plan_json(workspace, tf.show_plan(runner))
    except BaseException:
        tf.remove_workspace(workspace)
        raise
    return pending.summary.model_copy(update={"workspace": workspace})


def record_decision(stack: str, answer: ApprovalInput, pending: PendingPlan | None = None) -> None:
    """The decision in the logs and the audit trail (with the stored plan's checksum and serial, if any)."""
    what = "approved" if answer.approved else "rejected"
    default_logger().info(
        "plan of %s %s by %s%s",
        stack,
        what,
        answer.approver or "(no name given)",
        f": {answer.reason}" if answer.reason else "",
    )
    audit.record(
        "stack",
        what,
        stack,
        approver=answer.approver,
        comment=answer.reason,
        plan_sha256=pending.checksum if pending else None,
        state_serial=pending.serial if pending else None,
        run_id=pending.run_id if pending else None,
    )


def notice(pending: PendingPlan, timeout_seconds: int) -> str:
    """The 'approval needed' message: what the plan changes, and where to answer."""
    from prefect.settings import PREFECT_UI_URL

    summary = pending.summary
    ui = (PREFECT_UI_URL.value() or "").rstrip("/")
    lines = [
        f"Plan of {pending.stack} waits for approval: {summary.counts()}.",
        *(f"- {r.action} {r.address}" for r in summary.resources[:20]),
        *([f"- ... and {len(summary.resources) - 20} more"] if len(summary.resources) > 20 else []),
        f"Plan sha256 {pending.checksum[:16]}, made against state serial {pending.serial}.",
        f"Answer within {timeout_seconds}s: {ui}/runs/flow-run/{pending.run_id}",
    ]
    return "\n".join(lines)
