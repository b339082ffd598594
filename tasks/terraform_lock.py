"""Dead runs of a stack: the holder record next to the state lock, the wait for a dead run's terraform,
the release of a provably stale lock, and the sweep of dead runs' workspaces.

Each is called by apply-stack while it holds the stack's strict concurrency slot, so no other run of our
flows works on the stack meanwhile. The rules live in tools/terraform_lock.py and tools/identity.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK
from tasks.terraform_context import init_workspace, settle_ahead, state_bucket
from tools import aws as aws_tool
from tools import terraform as tf
from tools.errors import StateLocked, TerraformStillRunning
from tools.identity import this_process
from tools.process import default_logger
from tools.terraform import HolderRecord, LockInfo

__all__ = ["holding_lock", "name_holder", "release_stale_lock", "sweep_dead_workspaces", "wait_for_terraform"]

POLL_SECONDS = 1.0
LOG_EVERY_SECONDS = 10.0


def _flow_run_id() -> str:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else ""


@contextmanager
def holding_lock(stack: str, backend_block: str, aws_block: str) -> Iterator[HolderRecord]:
    """Write our holder record next to the stack's lock for a command that locks; remove it afterwards
    (a SIGKILLed run leaves it behind: that is what proves the lock's holder dead later). When the
    command finds the lock held by another (StateLocked), that holder's record is put back."""
    s3, backend, key = state_bucket(backend_block, aws_block, stack)
    previous = aws_tool.read_object(s3, backend.bucket, tf.holder_key(key))
    record = HolderRecord(
        process=this_process(), flow_run_id=_flow_run_id(), stack=stack, started=datetime.now(UTC)
    )
    aws_tool.write_object(s3, backend.bucket, tf.holder_key(key), record.model_dump_json().encode())
    restore = None
    try:
        yield record
    except StateLocked:
        restore = previous
        raise
    finally:
        try:
            if restore:
                aws_tool.write_object(s3, backend.bucket, tf.holder_key(key), restore)
            else:
                aws_tool.delete_object(s3, backend.bucket, tf.holder_key(key))
        except Exception as exc:  # noqa: BLE001 - the command's own outcome is the one that counts
            default_logger().warning("could not update the holder record of %s: %s", stack, exc)


def name_holder(exc: StateLocked, stack: str, backend_block: str, aws_block: str) -> StateLocked:
    """`exc` with the holder record's flow run, pid and host added to its message (when there is one)."""
    try:
        s3, backend, key = state_bucket(backend_block, aws_block, stack)
        record = tf.record_from_json(aws_tool.read_object(s3, backend.bucket, tf.holder_key(key)))
    except Exception:  # noqa: BLE001 - the lock error is the one to raise
        record = None
    if record is None:
        return exc
    named = StateLocked(
        f"{exc.message}; holder record: {record.describe()}",
        argv=exc.argv,
        exit_code=exc.exit_code,
        tail=exc.tail,
        hint=exc.hint,
    )
    named.__cause__ = exc
    return named


@task(name="terraform-wait-for-running", cache_policy=NO_CACHE, task_run_name="running terraform? {stack}")
def wait_for_terraform(
    stack: str, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK
) -> list[int]:
    """Wait while a terraform process on this host works on the stack's state (left running by a run whose
    flow process died: it keeps writing the state), up to the backend's `running_wait_seconds`; then
    TerraformStillRunning naming it. Never start a second apply beside it. Returns the pids waited for.
    Our own `terraform init` ahead of the apply (tasks/terraform_context.py) is let finish first."""
    log = default_logger()
    settle_ahead(stack)
    _, backend, key = state_bucket(backend_block, aws_block, stack)
    deadline = time.monotonic() + backend.running_wait_seconds
    waited: list[int] = []
    next_log = 0.0
    while live := tf.state_writers(stack, key):
        waited += [p.pid for p in live if p.pid not in waited]
        now = time.monotonic()
        if now >= deadline:
            raise TerraformStillRunning(
                f"terraform still works on {stack} ({key}) after {backend.running_wait_seconds}s: "
                + "; ".join(p.describe() for p in live),
                argv=live[0].argv,
                hint=f"a dead run's terraform (pid {live[0].pid}) writes the state: wait for it to finish",
            )
        if now >= next_log:
            log.warning(
                "waiting for a terraform process of a dead run on %s to exit (up to %ss): %s",
                stack,
                backend.running_wait_seconds,
                "; ".join(p.describe() for p in live),
            )
            next_log = now + LOG_EVERY_SECONDS
        time.sleep(POLL_SECONDS)
    if waited:
        log.warning("terraform process(es) %s on %s exited: going on", waited, stack)
    return waited


@task(name="terraform-release-stale-lock", cache_policy=NO_CACHE, task_run_name="stale lock? {stack}")
def release_stale_lock(
    stack: str, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK
) -> LockInfo | None:
    """Release the stack's S3 state lock when its holder is provably dead; returns the released lock.

    Call it while holding the stack's strict concurrency slot. A lock is stale only by the rule of
    tools/terraform_lock.py (its holder record names a dead process that shared our process table, or this
    machine before a reboot); it is force-unlocked with a warning naming it. Any other lock is left
    alone: Terraform then waits `lock_timeout_seconds` and the run fails with StateLocked naming the holder.
    """
    log = default_logger()
    s3, backend, key = state_bucket(backend_block, aws_block, stack)
    raw = aws_tool.read_object(s3, backend.bucket, f"{key}.tflock")
    if raw is None:
        return None
    lock = tf.lock_from_json(raw)
    if lock is None:
        log.warning("s3://%s/%s.tflock is not a Terraform lock; leaving it to Terraform", backend.bucket, key)
        return None
    record = tf.record_from_json(aws_tool.read_object(s3, backend.bucket, tf.holder_key(key)))
    reason = tf.stale_lock_reason(lock, record, stack, key)
    if reason is None:
        holder = record.describe() if record else "no holder record"
        log.info(
            "state of %s is locked (%s; %s); its holder may be alive: waiting", stack, lock.describe(), holder
        )
        return None
    log.warning(
        "releasing stale state lock %s of %s (Who %s, %s since %s): %s",
        lock.id,
        stack,
        lock.who,
        lock.operation or "?",
        lock.created or "?",
        reason,
    )
    workspace, runner, backend = init_workspace(stack, {}, key, backend_block, aws_block)
    try:
        tf.force_unlock(runner, lock.id)
    finally:
        tf.remove_workspace(workspace)
    aws_tool.delete_object(s3, backend.bucket, tf.holder_key(key))
    return lock


@task(name="terraform-sweep-workspaces", cache_policy=NO_CACHE)
def sweep_dead_workspaces() -> dict[str, str]:
    """Delete the private workspaces of dead runs (owner provably dead, older than a minute)."""
    removed = tf.sweep_workspaces()
    for path, reason in removed.items():
        default_logger().warning("removed the workspace %s of a dead run: %s", path, reason)
    return removed
