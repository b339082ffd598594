"""Terraform's S3 state lock: reading it, who holds it, and when its holder is provably dead.

Terraform writes `<state key>.tflock` (ID, Operation, Who = user@hostname, Created); its `Info` field is
not settable from the command line, and user@hostname does not tell containers apart. So before each
command that locks, our task writes a holder record next to it (`<state key>.holder.json`: the flow
process's host identity, pid and start time, flow run id, when it started) and removes it afterwards. A
lock is stale (released by the next run, under the stack's concurrency slot) only when:

(a) its record's identity equals ours (same boot, host name and pid namespace: we see its process table),
    the lock was created after the record was written (the record describes this lock), the recorded
    process is dead, and no terraform process here works on the stack's state; or
(b) its record was written by this very machine in an earlier boot (`HostIdentity.rebooted_since`).

Anything else (no record, another identity, a live holder) is not stale. No Prefect here.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from tools.identity import HostIdentity, ProcessRef, pid_alive, this_host

__all__ = [
    "HolderRecord",
    "LockInfo",
    "TerraformProcess",
    "holder_key",
    "live_terraform_processes",
    "lock_from_json",
    "parse_lock_info",
    "record_from_json",
    "stale_lock_reason",
    "state_writers",
    "this_holder",
]

CLOCK_SLACK = timedelta(seconds=2)


class LockInfo(BaseModel):
    id: str = ""
    path: str = ""
    operation: str = ""
    who: str = ""
    version: str = ""
    created: str = ""

    def describe(self) -> str:
        who, op, since = self.who or "?", self.operation or "?", self.created or "?"
        return f"lock {self.id or '?'} held by {who} ({op} since {since})"


class HolderRecord(BaseModel):
    """What our flow process writes next to the lock before a command that locks."""

    process: ProcessRef
    flow_run_id: str = ""
    stack: str = ""
    started: datetime = Field(description="UTC, written before Terraform took the lock")

    def describe(self) -> str:
        run = self.flow_run_id or "no flow run"
        return f"pid {self.process.pid} on {self.process.identity.describe()}, flow run {run}"


def holder_key(state_key: str) -> str:
    return f"{state_key}.holder.json"


_LOCK_FIELD = re.compile(r"^\s*(ID|Path|Operation|Who|Version|Created):\s*(.*)$")


def parse_lock_info(lines: Iterable[str]) -> LockInfo | None:
    """The `Lock Info:` block of Terraform's "Error acquiring the state lock", or None."""
    lines = list(lines)
    if not any("Error acquiring the state lock" in line for line in lines):
        return None
    info: dict[str, str] = {}
    for line in lines:
        match = _LOCK_FIELD.match(line)
        if match and match.group(1).lower() not in info:
            info[match.group(1).lower()] = match.group(2).strip()
    return LockInfo(**info)


def lock_from_json(raw: str | bytes) -> LockInfo | None:
    """The lock object of Terraform's S3 backend (`<state key>.tflock`: ID, Operation, Who, Created...)."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    fields = set(LockInfo.model_fields)
    return LockInfo(**{k.lower(): str(v) for k, v in data.items() if k.lower() in fields})


def record_from_json(raw: str | bytes | None) -> HolderRecord | None:
    if not raw:
        return None
    try:
        return HolderRecord.model_validate_json(raw)
    except ValueError:
        return None


def this_holder() -> str:
    """What Terraform writes as `Who` when this process's user on this host takes a lock: user@hostname."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = ""
    return f"{user}@{socket.gethostname()}"


class TerraformProcess(BaseModel):
    pid: int
    cwd: str
    argv: list[str]
    state_key: str | None = Field(None, description="Backend key of its working directory, when readable")

    def describe(self) -> str:
        return f"pid {self.pid}: {' '.join(self.argv[:6])}"


def live_terraform_processes(stack: str, proc: Path = Path("/proc")) -> list[TerraformProcess]:
    """Every live `terraform` process on this host whose working directory is a copy of `stack`
    (`.../<stack>`, e.g. a flow's private workspace or infra/terraform itself). Zombies do not count;
    a process whose directory cannot be read counts (it might be one). Its state key comes from the
    directory's backend (`.terraform/terraform.tfstate`) or, during `init`, from its command line."""
    suffix = "/" + stack.strip("/")
    found = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            if not argv or Path(argv[0]).name != "terraform":
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                continue
        except OSError:
            continue  # gone meanwhile
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = "?"
        if cwd != "?" and not cwd.removesuffix(" (deleted)").endswith(suffix):
            continue
        key = None
        try:
            backend = json.loads((entry / "cwd" / ".terraform" / "terraform.tfstate").read_text())
            key = ((backend.get("backend") or {}).get("config") or {}).get("key")
        except (OSError, ValueError, AttributeError):
            # not initialised yet: an `init` names its key on its command line (-backend-config=key=...)
            key = next((a.split("=", 2)[2] for a in argv if a.startswith("-backend-config=key=")), None)
        found.append(TerraformProcess(pid=int(entry.name), cwd=cwd, argv=argv, state_key=key))
    return found


def state_writers(stack: str, state_key: str, proc: Path = Path("/proc")) -> list[TerraformProcess]:
    """The live terraform processes here that may lock or write this stack's state: on its key (or on an
    unreadable one), not running with `-lock=false` (a plan of detect-drift neither locks nor writes)."""
    return [
        p
        for p in live_terraform_processes(stack, proc)
        if p.state_key in (None, state_key) and "-lock=false" not in p.argv
    ]


def _created(lock: LockInfo) -> datetime | None:
    """Terraform's `Created` (RFC 3339 with nanoseconds), to the second."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", lock.created or "")
    return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC) if match else None


def stale_lock_reason(
    lock: LockInfo,
    record: HolderRecord | None,
    stack: str,
    state_key: str,
    *,
    here: HostIdentity | None = None,
    writers: Callable[[], list[TerraformProcess]] | None = None,
    alive: Callable[[int, int | None], bool] = pid_alive,
) -> str | None:
    """Why `lock` is provably stale, or None when its holder may be alive (see the module docstring).
    `here`, `writers` and `alive` default to this host, its /proc and its process table."""
    if not lock.id or record is None:
        return None
    here = here or this_host()
    theirs = record.process.identity
    if here.rebooted_since(theirs):
        return (
            f"its holder ({record.describe()}) ran on this machine before its reboot: every process of "
            "that boot is dead"
        )
    if not here.same_process_table(theirs):
        return None
    created = _created(lock)
    if created is None or created < record.started.astimezone(UTC) - CLOCK_SLACK:
        return None  # the record was written after this lock was taken: it is not this lock's holder
    if alive(record.process.pid, record.process.start):
        return None
    live = (writers or (lambda: state_writers(stack, state_key)))()
    if live:
        return None
    return (
        f"its holder is dead: {record.describe()} is gone from this host's process table and no "
        f"terraform process here works on {stack} ({state_key})"
    )
