"""One guarded fix to Prefect's flow engine, applied where our flows are imported (flows/__init__.py).

Prefect 3.9's sync flow engine joins its heartbeat thread when a flow run ends, and that thread sleeps in
1 s steps, so every flow run, subflows included, ends up to 1 s late (a rollout is three flow runs, a
release four). Prefect's async engine already leaves the thread unjoined: it has been told to stop, it
sends nothing more and exits within a second on its own (a daemon thread). `_unjoined_heartbeats` makes the
sync engine do the same. Heartbeats are still sent at the same rate (zombie detection needs them). The fix
applies only to the Prefect versions it was checked against; any other version runs unpatched.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager
from typing import Any

import prefect
import prefect.flow_engine as _engine

CHECKED_PREFECT = ("3.9.",)


def unjoin_heartbeats() -> bool:
    """Apply the fix (idempotent); True when Prefect's engine runs with it."""
    original = getattr(_engine, "_send_heartbeats", None)
    if original is None or getattr(original, "devops_flows_unjoined", False):
        return original is not None
    if not prefect.__version__.startswith(CHECKED_PREFECT):
        return False
    if "join_on_exit" not in inspect.signature(original).parameters:
        return False

    def _unjoined_heartbeats(engine: Any, join_on_exit: bool = True) -> AbstractContextManager[None]:
        return original(engine, join_on_exit=False)

    _unjoined_heartbeats.devops_flows_unjoined = True  # type: ignore[attr-defined]
    _unjoined_heartbeats.__wrapped__ = original  # type: ignore[attr-defined]
    _engine._send_heartbeats = _unjoined_heartbeats
    return True
