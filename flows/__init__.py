"""The flows. Importing the package, which every flow module's import does, applies the guarded
heartbeat fix to Prefect's flow engine (flows/engine.py) before any flow runs."""

from flows.engine import CHECKED_PREFECT, unjoin_heartbeats

HEARTBEAT_JOIN_PATCHED = unjoin_heartbeats()

__all__ = ["CHECKED_PREFECT", "HEARTBEAT_JOIN_PATCHED"]
