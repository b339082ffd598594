"""Prefect global concurrency limits we rely on (strict, so a missing one is an error, not no limit):
created on first use, limit 1.

- `bake-host-<host>`: one bake of a host at a time, from the content-hash lookup until the AMI it bakes or
  reuses is recorded (so two bakes of the same content end with one AMI, the second reusing the first's),
  and prune-images deregisters a host's AMI only inside it (after re-checking its references).
- `tf-stack-<stack>` (tasks/terraform.py): one apply per stack; prune-images holds it too.
"""

from __future__ import annotations

import re

__all__ = ["BAKE_LEASE_SECONDS", "bake_limit_name", "ensure_bake_limit", "ensure_global_limit"]

# Renewed while held; a SIGKILLed holder's slot is reclaimed by the server after the lease (60 s minimum).
BAKE_LEASE_SECONDS = 60


def bake_limit_name(host: str) -> str:
    return "bake-host-" + (re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-") or "unknown")


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


def ensure_bake_limit(host: str) -> str:
    return ensure_global_limit(bake_limit_name(host))
