"""One run per Terraform stack at a time: a strict Prefect global concurrency limit `tf-stack-<slug>`
(limit 1) per stack, created when missing, held as a lease renewed while the run works. A SIGKILLed
holder's slot is reclaimed by the server once its lease expires; Terraform's own S3 lock still guards
the state meanwhile."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.limits import ensure_global_limit, holding
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
    return ensure_global_limit(stack_limit_name(stack))


@contextmanager
def stack_slots(limits: str | Sequence[str]) -> Iterator[None]:
    """Hold the slots of these limits (from `ensure_stack_limit`) while the block runs; none: no wait."""
    with holding(limits, STACK_LEASE_SECONDS):
        yield
