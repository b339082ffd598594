"""The audit trail read back from the Prefect server's events API, as the UI's event feed shows it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any


def audit_events(
    resource_id: str, since: datetime, expect: set[str], seconds: float = 30
) -> list[dict[str, Any]]:
    """The `devops.*` events about `resource_id` (e.g. `devops.ami.ami-123`) that occurred since `since`,
    waiting up to `seconds` until every event name in `expect` is among them (events are sent in the
    background)."""
    from prefect.client.orchestration import get_client

    body = {
        "filter": {
            "occurred": {
                "since": since.isoformat(),
                "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            "event": {"prefix": ["devops."]},
            "resource": {"id": [resource_id]},
        },
        "limit": 50,
    }
    end = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while True:
            found = client.request("POST", "/events/filter", json=body).json()["events"]
            if expect <= {e["event"] for e in found} or time.monotonic() > end:
                return found
            time.sleep(0.5)


def related_kinds(event: dict[str, Any]) -> set[str]:
    """The roles of the resources Prefect related to the event (flow-run, flow, deployment...)."""
    return {r.get("prefect.resource.role", "") for r in event.get("related", [])}
