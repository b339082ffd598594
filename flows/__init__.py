"""The flows. Importing the package, which every flow module's import does, applies the guarded
heartbeat fix to Prefect's flow engine (flows/engine.py) before any flow runs, and lets the process exit
without its final garbage collection (flows/process_exit.py)."""

from flows import process_exit
from flows.engine import CHECKED_PREFECT, unjoin_heartbeats

HEARTBEAT_JOIN_PATCHED = unjoin_heartbeats()
process_exit.install()

__all__ = ["CHECKED_PREFECT", "HEARTBEAT_JOIN_PATCHED"]
