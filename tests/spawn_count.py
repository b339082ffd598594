"""Count the processes this Python process starts, from audit events (`sys.addaudithook`).

Every way Python starts a process raises an audit event before the process exists: `subprocess.Popen`
(and so asyncio, ansible-runner's pexpect and python-terraform), `os.posix_spawn`, `os.spawn`, `os.exec`,
`os.system`, `os.fork`/`os.forkpty`. The hook is installed once (audit hooks cannot be removed) and only
records while a `SpawnCounter` is active, from any thread of this process:

    with SpawnCounter() as spawned:
        call_that_must_not_start_anything()
    assert spawned.count == 0, spawned.events
"""

from __future__ import annotations

import sys
import threading
from typing import Any

SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "os.fork", "os.forkpty"}
)
_lock = threading.Lock()
_active: list[SpawnCounter] = []
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in SPAWN_EVENTS and _active:
        detail = " ".join(str(a) for a in (args[1] if event == "subprocess.Popen" else args)[:4])[:200]
        with _lock:
            for counter in _active:
                counter.events.append(f"{event}: {detail}")


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


class SpawnCounter:
    """Records every process started by this Python process while active."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @property
    def count(self) -> int:
        return len(self.events)

    def __enter__(self) -> SpawnCounter:
        _install()
        with _lock:
            _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _active.remove(self)
