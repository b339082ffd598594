"""How a tool's process is stopped on cancel or deadline: each tool's own shutdown protocol.

- Terraform: "Interrupt received. Please wait for Terraform to exit or data loss may occur. Gracefully
  shutting down..." - one SIGINT makes it finish the provider calls in flight, write the state and
  release the lock; a second interrupt (or SIGTERM) makes it exit at once and may lose the state write.
  So: exactly one SIGINT to terraform itself (it stops its provider plugins), a long wait, and SIGKILL of
  the whole group only as the last resort.
- Packer: one SIGINT makes it run its clean-up (terminate the build instance, delete the temporary key
  pair and security group); a second one skips it. Same protocol as Terraform, with its own window.
- Everything else (ansible-runner, git, builders): SIGINT, SIGTERM, then SIGKILL to the whole group,
  each after a short grace period.

The last step of every policy is SIGKILL to the whole process group, so no plugin outlives its tool.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.1
KILL_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Step:
    """Send `signal` (to the tool alone, or to its whole process group), then wait up to `wait` seconds."""

    signal: signal.Signals
    wait: float
    group: bool = True

    def describe(self) -> str:
        whom = "its process group" if self.group else "the tool"
        return f"{self.signal.name} to {whom}, then up to {self.wait:g}s"


@dataclass(frozen=True)
class StopPolicy:
    steps: tuple[Step, ...]

    def describe(self) -> str:
        return "; ".join(step.describe() for step in self.steps)


def escalating(interrupt: float = 10.0, terminate: float = 5.0) -> StopPolicy:
    """SIGINT, SIGTERM, SIGKILL to the whole group: for tools with no data to save."""
    return StopPolicy(
        (
            Step(signal.SIGINT, interrupt),
            Step(signal.SIGTERM, terminate),
            Step(signal.SIGKILL, KILL_WAIT_SECONDS),
        )
    )


def interrupt_once(window: float) -> StopPolicy:
    """One SIGINT to the tool alone, up to `window` s for its graceful stop, then SIGKILL to the group."""
    return StopPolicy((Step(signal.SIGINT, window, group=False), Step(signal.SIGKILL, KILL_WAIT_SECONDS)))


GENERIC_STOP = escalating()


def stop_process(
    proc: subprocess.Popen, policy: StopPolicy, log: logging.Logger | logging.LoggerAdapter
) -> None:
    """Apply `policy` to `proc` (a session leader started with start_new_session=True) until it and every
    process of its group are gone."""
    pgid = proc.pid
    for step in policy.steps:
        if _gone(proc, pgid):
            return
        if proc.returncode is not None and not step.group:
            continue  # the tool is gone but not all of its group: the next step takes the group
        try:
            (os.killpg if step.group else os.kill)(pgid, step.signal)
        except ProcessLookupError:
            continue
        log.warning("sent %s (%s)", step.signal.name, step.describe())
        if _wait_gone(proc, pgid, step.wait):
            return


def _gone(proc: subprocess.Popen, pgid: int) -> bool:
    return proc.poll() is not None and not group_alive(pgid)


def _wait_gone(proc: subprocess.Popen, pgid: int, seconds: float) -> bool:
    """True once the tool is reaped and no process of its group is left, within `seconds`; once the tool
    is reaped, its group gets at most KILL_WAIT_SECONDS more (a plugin that outlives its tool goes next)."""
    end = time.monotonic() + seconds
    while True:
        try:
            proc.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if proc.returncode is not None:
            end = min(end, time.monotonic() + KILL_WAIT_SECONDS)
            if not group_alive(pgid):
                return True
        if time.monotonic() >= end:
            return False


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process of group `pgid` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
