"""Process primitives of the local services: free ports, a detached spawn, a stop by process group, and
polls for health. The services themselves are started in `devenv.services`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tools.errors import ToolError
from tools.process import inherited_env


def log(message: str) -> None:
    print(f"[sandbox] {message}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    raise ToolError(f"{what} did not become ready within {seconds:g}s")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def spawn(
    argv: list[str],
    logfile: Path,
    env: dict[str, str] | None = None,
    inherit: tuple[str, ...] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a long-running service detached from us (own session), output to `logfile`. Its environment
    is ours plus `env`, or with `inherit` only the variables of ours it names (`NAME` or `PREFIX*`)."""
    logfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # logs may name endpoints, users
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**(os.environ if inherit is None else inherited_env(inherit)), **(env or {})},
        )
    return proc.pid


def stop_pid(pid: int, name: str, seconds: float = 15) -> None:
    """SIGTERM the process group of `pid`, SIGKILL it when it is still alive after `seconds`."""
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        log(f"{name} ignored SIGTERM; killing it")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def log_tail(logfile: Path, lines: int = 40) -> list[str]:
    return logfile.read_text(errors="replace").splitlines()[-lines:] if logfile.exists() else []
