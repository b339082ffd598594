"""The audit trail: one Prefect event per change the flows make, with the ids of what changed.

Events appear in the UI's event feed and are read back with the events API (`/events/filter`). Prefect
adds the run, flow, deployment and work pool that emitted each one as related resources, so an event
answers "which run changed this, from which deployment". Names:

- `devops.ami.baked`, `devops.ami.reused`, `devops.ami.deregistered` about `devops.ami.<ami id>`
  (host, content hash, commit);
- `devops.stack.applied`, `devops.stack.rolled-back` about `devops.stack.<stack path>` (counts, changed
  addresses, launch template id and version, restored variables); `devops.stack.approved` and
  `devops.stack.rejected` (approver, comment, the stored plan's sha256 and state serial);
- `devops.app.deployed`, `devops.app.restored` about `devops.app.<container name>` (image reference);
- `devops.host.changed` about `devops.host.<inventory host>` (changed task count).

An event that cannot be sent is logged and never fails the change it describes (that already happened).
"""

from __future__ import annotations

from typing import Any

from tools.process import default_logger

KINDS = frozenset({"ami", "stack", "app", "host"})


def record(kind: str, what: str, resource: str, **payload: Any) -> None:
    """Emit `devops.<kind>.<what>` about `resource` (an AMI id, stack path, container or host name)."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}")
    from prefect.events import emit_event

    event = f"devops.{kind}.{what}"
    try:
        emit_event(
            event=event,
            resource={"prefect.resource.id": f"devops.{kind}.{resource}", "prefect.resource.name": resource},
            payload={k: v for k, v in payload.items() if v is not None},
        )
    except Exception as exc:  # noqa: BLE001 - the change happened; a lost event must not hide it
        default_logger().warning("audit event %s for %s not sent: %s", event, resource, exc)
