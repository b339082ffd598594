"""One run per Terraform stack at a time: a strict Prefect global concurrency limit `tf-stack-<slug>`
(limit 1) per stack, created when missing, held as a lease renewed while the run works. A SIGKILLed
holder's slot is reclaimed by the server once its lease expires; Terraform's own S3 lock still guards
the state meanwhile."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from tools import terraform as tf

# Lease of the per-stack concurrency slot: renewed every 45 s while held; a SIGKILLed holder's slot is
# reclaimed by the server within ~75 s (60 s is the server's minimum lease).
STACK_LEASE_SECONDS = 60

__all__ = ["STACK_LEASE_SECONDS", "ensure_stack_limit", "stack_limit_name", "stack_slots"]


def stack_limit_name(stack: str) -> str:
    return f"tf-stack-{tf.slug(stack)}"


@task(name="ensure-stack-limit", cache_policy=NO_CACHE)
def ensure_stack_limit(stack: str) -> str:
    """Create the global concurrency limit `tf-stack-<slug>` (limit 1) if it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = stack_limit_name(stack)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
    return name


@contextmanager
def stack_slots(limits: str | Sequence[str]) -> Iterator[None]:
    """Hold the slots of these limits (from `ensure_stack_limit`) while the block runs; none: no wait."""
    if not limits:
        yield
        return
    with concurrency(
        limits,
        occupy=1,
        strict=True,
        lease_duration=STACK_LEASE_SECONDS,
        raise_on_lease_renewal_failure=False,  # Terraform's own lock still guards the state
    ):
        yield
