"""Prefect global concurrency limits we rely on (strict, so a missing one is an error, not no limit):
created on first use, limit 1, held as leases renewed while the holder works.

- `bake-<host>-<hash12>`: one bake of one content (host and content hash) at a time, from the
  content-hash lookup until the AMI it bakes or reuses is recorded (so two bakes of the same content end
  with one AMI, the second reusing the first's); bakes of other content, even of the same host, run beside
  it. prune-images deregisters an AMI only inside the slot of that AMI's content.
- `tf-stack-<stack>` (tasks/stack_slot.py): one apply per stack; prune-images holds it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prefect.concurrency.sync import concurrency

__all__ = ["BAKE_LEASE_SECONDS", "bake_limit_name", "ensure_bake_limit", "ensure_global_limit", "holding"]

# Renewed while held; a SIGKILLed holder's slot is reclaimed by the server after the lease (60 s minimum).
BAKE_LEASE_SECONDS = 60


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def bake_limit_name(host: str, content_hash: str) -> str:
    """The slot of one content of one host: `bake-<host>-<hash[:12]>`."""
    return f"bake-{_slug(host) or 'unknown'}-{_slug(content_hash)[:12] or 'unknown'}"


def ensure_global_limit(name: str, limit: int = 1) -> str:
    """Create the global concurrency limit `name` if it does not exist yet; returns the name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:
                pass
    return name


def ensure_bake_limit(host: str, content_hash: str) -> str:
    return ensure_global_limit(bake_limit_name(host, content_hash))


@contextmanager
def holding(limits: str | Sequence[str], lease_seconds: float) -> Iterator[None]:
    """Hold one slot of each of these strict limits while the block runs (none: no wait). A lease that
    cannot be renewed does not stop the holder: what the slot orders is still guarded underneath (the
    content hash and Packer's AMI-name check for a bake, Terraform's S3 lock for a stack)."""
    if not limits:
        yield
        return
    with concurrency(
        limits,
        occupy=1,
        strict=True,
        lease_duration=lease_seconds,
        raise_on_lease_renewal_failure=False,
    ):
        yield
