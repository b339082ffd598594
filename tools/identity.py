"""Who "here" is, precisely enough to prove that a process of ours is dead.

`user@hostname` (what Terraform writes as a lock's `Who`) does not tell containers apart: two containers
may share a hostname, and a pid says nothing outside its pid namespace. A `HostIdentity` is the kernel's
boot id (changes at every boot; shared by the containers of one kernel), the hostname and the inode of our
pid namespace (one per container). Two records with equal identities were written by processes that see
the same process table, so "that pid is not alive here" proves the writer dead. A process is also named
by its start time (clock ticks since boot, /proc/<pid>/stat field 22), so a reused pid is not taken for
the writer. No Prefect here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import BaseModel, Field

__all__ = [
    "HostIdentity",
    "ProcessRef",
    "pid_alive",
    "pids_working_in",
    "process_start",
    "this_host",
    "this_process",
]

PROC = Path("/proc")
# The initial pid namespace's inode (PROC_PID_INIT_INO): a process in it runs on the host, not in a container.
INIT_PID_NAMESPACE = 0xEFFFFFFC


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class HostIdentity(BaseModel):
    boot_id: str = Field(description="/proc/sys/kernel/random/boot_id: changes at each boot")
    hostname: str
    pid_namespace: int = Field(0, description="inode of /proc/self/ns/pid: one per container")
    machine_id: str = Field("", description="/etc/machine-id when readable (the same across reboots)")

    def same_process_table(self, other: HostIdentity) -> bool:
        """True when pids of `other` can be checked here: same boot, same host name, same pid namespace
        (all three known)."""
        return bool(self.boot_id and self.pid_namespace) and (
            self.boot_id,
            self.hostname,
            self.pid_namespace,
        ) == (other.boot_id, other.hostname, other.pid_namespace)

    def rebooted_since(self, other: HostIdentity) -> bool:
        """True when `other` is this very machine in an earlier boot: same machine id and host name, both
        in the host's own (initial) pid namespace, another boot id. Every process of that boot is dead."""
        return (
            bool(self.machine_id and self.boot_id and other.boot_id)
            and self.machine_id == other.machine_id
            and self.hostname == other.hostname
            and self.pid_namespace == other.pid_namespace == INIT_PID_NAMESPACE
            and self.boot_id != other.boot_id
        )

    def describe(self) -> str:
        return f"{self.hostname} (boot {self.boot_id[:8] or '?'}, pid namespace {self.pid_namespace or '?'})"


class ProcessRef(BaseModel):
    """A process on a host: its pid and start time (clock ticks after boot; None when unknown)."""

    identity: HostIdentity
    pid: int
    start: int | None = None


def this_host(proc: Path = PROC) -> HostIdentity:
    try:
        namespace = os.stat(proc / "self" / "ns" / "pid").st_ino
    except OSError:
        namespace = 0
    return HostIdentity(
        boot_id=_read(proc / "sys" / "kernel" / "random" / "boot_id"),
        hostname=socket.gethostname(),
        pid_namespace=namespace,
        machine_id=_read(Path("/etc/machine-id")),
    )


def process_start(pid: int, proc: Path = PROC) -> int | None:
    """Start time of `pid` in clock ticks after boot, or None when it does not exist (or is unreadable)."""
    stat = _read(proc / str(pid) / "stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def this_process() -> ProcessRef:
    return ProcessRef(identity=this_host(), pid=os.getpid(), start=process_start(os.getpid()))


def pid_alive(pid: int, start: int | None = None, proc: Path = PROC) -> bool:
    """True when `pid` exists here, is no zombie, and (when `start` is given) started at that time: a
    different start means the pid was reused, so the process we knew is dead."""
    if pid <= 0:
        return False
    stat = _read(proc / str(pid) / "stat")
    if not stat:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return False
    if start is not None:
        try:
            return int(fields[19]) == start
        except (IndexError, ValueError):
            return True  # unreadable start: it may be the one
    return True


def pids_working_in(directory: str | Path, proc: Path = PROC) -> list[int]:
    """Live processes whose working directory is `directory` or below it."""
    root = str(directory).rstrip("/")
    found = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + "/")) and pid_alive(int(entry.name), proc=proc):
            found.append(int(entry.name))
    return found
