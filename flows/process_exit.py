"""A flow-run process exits without its final garbage collection.

Each deployment run is a fresh process that exits when its flow run ends. At exit CPython runs a full
collection over everything Prefect, pydantic, boto3 and the flows imported (a few hundred thousand
objects): ~0.4 s per run, for memory the operating system takes back anyway. `freeze_at_exit`, registered
with `atexit` when the flows package is imported (so after Prefect's own exit handlers were registered: it
runs before them), moves every object alive then into the permanent generation, which no collection
visits; objects made later (by Prefect's log and event drains) are collected as usual. What an object in
a reference cycle would do in `__del__` at exit is skipped: nothing of ours relies on it (temporary files
and workspaces are removed explicitly, Prefect flushes its logs in its own exit handlers).
"""

from __future__ import annotations

import atexit
import gc

__all__ = ["freeze_at_exit", "install"]


def freeze_at_exit() -> None:
    gc.freeze()


def install() -> bool:
    """Register `freeze_at_exit` once; True when it is registered by this call."""
    if getattr(install, "done", False):
        return False
    atexit.register(freeze_at_exit)
    install.done = True  # type: ignore[attr-defined]
    return True
