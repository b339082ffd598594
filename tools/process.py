"""The one process runner. Every CLI tool wrapper starts its processes here and nowhere else.

- argv is a list, never a shell; the command is logged redacted.
- Secrets reach the child only through `secret_env`, `stdin` or files the caller made 0600; every
  secret value is registered for redaction, so neither the logs nor the raised error show it.
- stdout and stderr are read line by line on two threads and streamed to the Prefect run logger
  (a plain logger outside a run) as they arrive; a bounded tail is kept for errors.
- The child gets its own session (`start_new_session=True`). On our deadline, on cancel (a callback,
  Prefect's SIGTERM raised as an exception in the main thread, or the main thread exiting while this
  runs in a worker thread), the whole process group gets SIGINT, then SIGTERM, then SIGKILL, each after
  a grace period. Terraform needs the SIGINT to release its state lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import ProcessCancelled, ProcessTimeout, ToolError, ToolMissing
from tools.redact import redact, redact_argv, register_secret

LineHandler = Callable[[str, str], None]  # (stream name, redacted line)

TAIL_LINES = 40
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Grace:
    """Seconds to wait after each signal before sending the next one."""

    interrupt: float = 10.0
    terminate: float = 5.0


@dataclass
class ProcessResult:
    argv: list[str]  # redacted
    exit_code: int
    tail: list[str]  # redacted, stdout and stderr interleaved as they arrived
    duration: float
    stdout: str = ""  # redacted; only filled when capture_stdout=True
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def default_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow/task run, a plain logger outside one."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() or FlowRunContext.get():
            return get_run_logger()
    except Exception:  # noqa: BLE001 - logging must never break a run
        pass
    return logging.getLogger("devops_flows.process")


def which(executable: str, hint: str | None = None) -> str:
    """Absolute path of an executable on PATH, or ToolMissing naming it."""
    found = shutil.which(executable)
    if not found:
        raise ToolMissing(f"{executable} is not installed or not on PATH", hint=hint or "run scripts/setup")
    return found


class _Reader(threading.Thread):
    def __init__(self, name: str, stream, sink: Callable[[str, str], None]) -> None:  # noqa: ANN001
        super().__init__(name=f"process-reader-{name}", daemon=True)
        self.stream_name, self.stream, self.sink = name, stream, sink

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            self.sink(self.stream_name, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        self.stream.close()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    should_cancel: Callable[[], bool] | None = None,
    grace: Grace = Grace(),
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    on_line: LineHandler | None = None,
    log_line: Callable[[str, str], bool] | None = None,
    capture_stdout: bool = False,
    check: bool = True,
    error: type[ToolError] = ToolError,
    what: str | None = None,
    hint: str | None = None,
    ok_codes: Sequence[int] = (0,),
) -> ProcessResult:
    """Run `argv`, stream its output, enforce the deadline and cancel, return or raise `error`.

    `env` is added to the current environment; `secret_env` too, and its values are registered as
    secrets. `stdin` (e.g. a password) is written once and closed. `log_line(stream, line)` decides
    whether a line goes to the logger (default: all); `on_line` sees every line (e.g. machine output).
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    log = logger or default_logger()
    secrets = [v for v in (secret_env or {}).values() if v]
    for value in secrets:
        register_secret(value)
    if stdin:
        register_secret(stdin)
    shown = redact_argv(argv)
    label = what or Path(argv[0]).name
    executable = argv[0] if os.sep in argv[0] else which(argv[0])

    child_env = {**os.environ, **(env or {}), **(secret_env or {})}
    log.info("$ %s", " ".join(shown))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            [executable, *argv[1:]],
            cwd=cwd,
            env=child_env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolMissing(f"{label} could not be started: {exc.strerror}", argv=shown, hint=hint) from exc

    tail: deque[str] = deque(maxlen=TAIL_LINES)
    stderr_tail: deque[str] = deque(maxlen=TAIL_LINES)
    stdout_lines: list[str] = []
    lock = threading.Lock()

    def sink(stream: str, line: str) -> None:
        line = redact(line)
        with lock:
            tail.append(line)
            if stream == "stderr":
                stderr_tail.append(line)
            elif capture_stdout:
                stdout_lines.append(line)
        if on_line is not None:
            on_line(stream, line)
        if log_line is None or log_line(stream, line):
            log.info("%s", line)

    readers = [_Reader("stdout", proc.stdout, sink), _Reader("stderr", proc.stderr, sink)]
    for reader in readers:
        reader.start()
    if stdin is not None and proc.stdin is not None:
        try:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass

    deadline = started + timeout if timeout else None
    in_worker = threading.current_thread() is not threading.main_thread()
    reason: str | None = None
    try:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                reason = "timeout"
            elif should_cancel is not None and should_cancel():
                reason = "cancel"
            elif in_worker and not threading.main_thread().is_alive():
                reason = "cancel"  # the flow process is shutting down under us
            if reason:
                stop_group(proc, grace, log)
                break
            try:
                proc.wait(timeout=POLL_SECONDS)  # returns as soon as the process exits
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        # Prefect raises TerminationSignal here on cancel; KeyboardInterrupt likewise.
        log.warning("%s interrupted: stopping its process group", label)
        stop_group(proc, grace, log)
        for reader in readers:
            reader.join(timeout=2)
        raise
    for reader in readers:
        reader.join(timeout=10)
    exit_code = proc.wait()
    result = ProcessResult(
        argv=shown,
        exit_code=exit_code,
        tail=list(tail),
        duration=time.monotonic() - started,
        stdout="\n".join(stdout_lines),
        stderr_tail=list(stderr_tail),
    )
    if reason == "timeout":
        raise ProcessTimeout(
            f"{label} did not finish within {timeout:g}s; its process group was stopped",
            argv=shown,
            exit_code=exit_code,
            tail=result.tail,
            hint=hint,
            transient=False,
        )
    if reason == "cancel":
        raise ProcessCancelled(
            f"{label} was cancelled; its process group was stopped",
            argv=shown,
            exit_code=exit_code,
            tail=result.tail,
            hint=hint,
        )
    if check and exit_code not in ok_codes:
        raise error(f"{label} failed", argv=shown, exit_code=exit_code, tail=result.tail, hint=hint)
    return result


def stop_group(
    proc: subprocess.Popen, grace: Grace = Grace(), log: logging.Logger | logging.LoggerAdapter | None = None
) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the child's whole process group, with grace periods."""
    log = log or logging.getLogger("devops_flows.process")
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in (
        (signal.SIGINT, grace.interrupt),
        (signal.SIGTERM, grace.terminate),
        (signal.SIGKILL, 5.0),
    ):
        if not _signal_group(pgid, sig):
            break
        log.info("sent %s to process group %d", sig.name, pgid)
        if _wait_group(proc, pgid, wait):
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_group(proc: subprocess.Popen, pgid: int, seconds: float) -> bool:
    """True once the leader is reaped and no process of the group is left."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        proc.poll()
        if proc.returncode is not None and not group_alive(pgid):
            return True
        time.sleep(POLL_SECONDS)
    return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # signal 0 also succeeds for zombies; look for a live member
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
