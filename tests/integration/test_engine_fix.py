"""The guarded fix of Prefect's heartbeat join (flows/engine.py, applied by flows/__init__.py) against a
real Prefect server: it is applied on the pinned Prefect, and flow runs, subflows included, still send
their heartbeats."""

from __future__ import annotations

import time

import prefect
import prefect.flow_engine
from prefect import flow, get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

import flows


@flow(name="heartbeat-child")
def _child() -> str:
    return str(prefect.runtime.flow_run.id)


@flow(name="heartbeat-parent")
def _parent() -> list[str]:
    return [str(prefect.runtime.flow_run.id), _child()]


def _heartbeats(flow_run_ids: list[str], deadline: float = 30) -> set[str]:
    """The flow runs among flow_run_ids with a heartbeat event on the server (events land asynchronously)."""
    resources = [f"prefect.flow-run.{i}" for i in flow_run_ids]
    end = time.monotonic() + deadline
    seen: set[str] = set()
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                    resource=EventResourceFilter(id=resources),
                ),
                limit=50,
            )
            seen = {e.resource.id.removeprefix("prefect.flow-run.") for e in page.events}
            if seen >= set(flow_run_ids):
                break
            time.sleep(0.5)
    return seen


def test_the_fix_applies_to_the_pinned_prefect() -> None:
    # On a Prefect upgrade this fails: check whether _send_heartbeats still joins, then extend or drop it.
    assert prefect.__version__.startswith(flows.CHECKED_PREFECT), prefect.__version__
    assert flows.HEARTBEAT_JOIN_PATCHED
    assert prefect.flow_engine._send_heartbeats.devops_flows_unjoined


def test_flow_runs_and_subflows_still_send_heartbeats(prefect_server: str) -> None:
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        ids = _parent()
    assert len(set(ids)) == 2
    assert _heartbeats(ids) == set(ids)
