"""The one process runner. Every CLI tool wrapper starts its processes here and nowhere else.

- argv is a list, never a shell; the command is logged redacted.
- The child's environment is an allowlist: `inherit` names the variables (or `PREFIX*` patterns) it may
  take from ours (default: BASE_ENV, nothing secret), plus what the caller passes. So a Prefect API key,
  a registry password or another block's secret in the flow process never reaches a tool.
- Secrets reach the child only through `secret_env`, `stdin` or files the caller made 0600; every
  secret value is registered for redaction, so neither the logs nor the raised error show it.
- The child writes its stdout and stderr to two unlinked temporary files, which two threads follow and
  stream line by line to the run logger (`use_run_logger`) as lines arrive; a bounded tail is kept for errors.
  Files, not pipes: if this process is SIGKILLed (worker host lost), a pipe would break and kill the tool
  with SIGPIPE at its next line, e.g. Terraform halfway through writing its state; a file keeps it going.
- The child gets its own session (`start_new_session=True`), so no signal meant for us reaches it. On our
  deadline or on cancel (a callback, Prefect's SIGTERM raised as an exception in the main thread, the
  main thread exiting while this runs in a worker thread, or `stop_runs_in` from the task runner), the
  tool is stopped by its own protocol, a `tools.stopping.StopPolicy` (one SIGINT for Terraform and
  Packer, then a long wait; SIGKILL of the whole group only as the last resort).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from tools.errors import ProcessCancelled, ProcessTimeout, ToolError, ToolMissing
from tools.process_output import Follower, LineHandler, Output, ProcessResult
from tools.redact import redact_argv, register_secret
from tools.stopping import GENERIC_STOP, StopPolicy, group_alive, stop_process

POLL_SECONDS = 0.1

# What any tool may take from our environment: where programs and files are, locale, time zone, proxies
# and CA bundles. Never credentials: those come from blocks, through `secret_env`.
BASE_ENV: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def inherited_env(patterns: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of `environ` (default: ours) whose names match a pattern (`NAME` or `PREFIX*`)."""
    patterns = tuple(patterns)
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


RunLogger = Callable[[], "logging.Logger | logging.LoggerAdapter | None"]
_run_logger: RunLogger | None = None


def use_run_logger(hook: RunLogger | None) -> None:
    """Install the hook that returns the logger of the current run, or None outside one. `tasks` installs
    Prefect's run logger once; tools know no orchestrator."""
    global _run_logger
    _run_logger = hook


def default_logger() -> logging.Logger | logging.LoggerAdapter:
    """The current run's logger (the hook `use_run_logger` installed), a plain logger outside a run."""
    if _run_logger is not None:
        try:
            found = _run_logger()
        except Exception:  # noqa: BLE001 - logging must never break a run
            found = None
        if found is not None:
            return found
    return logging.getLogger("devops_flows.process")


def which(executable: str, hint: str | None = None) -> str:
    """Absolute path of an executable on PATH, or ToolMissing naming it."""
    found = shutil.which(executable)
    if not found:
        raise ToolMissing(f"{executable} is not installed or not on PATH", hint=hint or "run scripts/setup")
    return found


# A unit test's stand-in for the child (tools/process_fake.py): argv -> (exit code, [(stream, line)]).
_fake: Callable[[list[str]], tuple[int, list[tuple[str, str]]]] | None = None


# --- stopping runs of other threads ------------------------------------------------------------------

_stops: dict[int, threading.Event] = {}  # thread ident -> "stop the tool this thread runs"
_stops_lock = threading.Lock()


def stop_runs_in(threads: Iterable[int]) -> int:
    """Ask the tools run by these threads (idents) to stop by their policy; returns how many were asked.
    The task runner calls it when its flow is cancelled, so submitted tasks stop like inline ones."""
    asked = 0
    with _stops_lock:
        for ident in threads:
            event = _stops.get(ident)
            if event is not None:
                event.set()
                asked += 1
    return asked


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    inherit: Iterable[str] = BASE_ENV,
    secret_env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    should_cancel: Callable[[], bool] | None = None,
    stop: StopPolicy = GENERIC_STOP,
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

    The child's environment: the variables of ours that `inherit` names, then `env`, then `secret_env`
    (whose values are registered as secrets). `stdin` (e.g. a password) is written once and closed.
    `log_line(stream, line)` decides whether a line goes to the logger (default: all); `on_line` sees
    every line (e.g. machine output). On deadline or cancel the tool is stopped by `stop`.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    log = logger or default_logger()
    for value in [*(v for v in (secret_env or {}).values() if v), *([stdin] if stdin else [])]:
        register_secret(value)
    shown = redact_argv(argv)
    label = what or Path(argv[0]).name
    if _fake is not None:  # tools/process_fake.py: a unit test's scripted answer, no process
        log.info("$ %s", " ".join(shown))
        exit_code, lines = _fake(argv)
        output = Output(label, log, on_line, log_line, capture_stdout)
        for stream, line in lines:
            output(stream, line)
        result = output.result(shown, exit_code, 0.0)
        return _finish(result, None, label, stop, timeout, check, ok_codes, error, hint)
    executable = argv[0] if os.sep in argv[0] else which(argv[0])
    child_env = {**inherited_env(inherit), **(env or {}), **(secret_env or {})}
    log.info("$ %s", " ".join(shown))
    started = time.monotonic()
    proc, files = _spawn([executable, *argv[1:]], cwd, child_env, stdin is not None, label, shown, hint)
    output = Output(label, log, on_line, log_line, capture_stdout)
    exited = threading.Event()
    followers = [
        Follower(name, f.fileno(), output, exited)
        for name, f in zip(("stdout", "stderr"), files, strict=True)
    ]
    for file in files:
        file.close()  # each follower has its own descriptor
    for follower in followers:
        follower.start()
    _feed(proc, stdin)
    deadline = started + timeout if timeout else None
    try:
        reason = _supervise(proc, label, stop, log, deadline, should_cancel)
    except BaseException:
        # Prefect raises TerminationSignal here on cancel; KeyboardInterrupt likewise.
        log.warning("%s interrupted: stopping it (%s)", label, stop.describe())
        stop_process(proc, stop, log)
        _drain(exited, followers, 5)
        raise
    exit_code = proc.wait()
    _drain(exited, followers, 30)
    result = output.result(shown, exit_code, time.monotonic() - started)
    return _finish(result, reason, label, stop, timeout, check, ok_codes, error, hint)


def _finish(
    result: ProcessResult,
    reason: str | None,
    label: str,
    stop: StopPolicy,
    timeout: float | None,
    check: bool,
    ok_codes: Sequence[int],
    error: type[ToolError],
    hint: str | None,
) -> ProcessResult:
    """The result, or the error the run ended in: stopped on its deadline, cancelled, or a failed exit."""
    facts = {"argv": result.argv, "exit_code": result.exit_code, "tail": result.tail, "hint": hint}
    if reason == "timeout":
        raise ProcessTimeout(
            f"{label} did not finish within {timeout or 0:g}s; it was stopped ({stop.describe()})",
            transient=False,
            **facts,
        )
    if reason == "cancel":
        raise ProcessCancelled(f"{label} was cancelled; it was stopped ({stop.describe()})", **facts)
    if check and result.exit_code not in ok_codes:
        raise error(f"{label} failed", **facts)
    return result


def _spawn(
    argv: list[str],
    cwd: str | os.PathLike[str] | None,
    env: dict[str, str],
    with_stdin: bool,
    label: str,
    shown: list[str],
    hint: str | None,
) -> tuple[subprocess.Popen, tuple[IO[bytes], IO[bytes]]]:
    """Start the child in a session of its own, its stdout and stderr going to two unlinked files."""
    files = (tempfile.TemporaryFile(), tempfile.TemporaryFile())  # noqa: SIM115 - the caller closes them
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
            stdout=files[0],
            stderr=files[1],
            start_new_session=True,
        )
    except OSError as exc:
        for file in files:
            file.close()
        raise ToolMissing(f"{label} could not be started: {exc.strerror}", argv=shown, hint=hint) from exc
    return proc, files


def _feed(proc: subprocess.Popen, stdin: str | None) -> None:
    """Write `stdin` once and close it (a tool that exits without reading it is no error)."""
    if stdin is not None and proc.stdin is not None:
        try:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _supervise(
    proc: subprocess.Popen,
    label: str,
    stop: StopPolicy,
    log: logging.Logger | logging.LoggerAdapter,
    deadline: float | None,
    should_cancel: Callable[[], bool] | None,
) -> str | None:
    """Wait for the child; on the deadline or a cancel stop it by its policy. Returns why it was stopped
    ("timeout", "cancel") or None when it exited on its own."""
    in_worker = threading.current_thread() is not threading.main_thread()
    asked_to_stop = threading.Event()
    with _stops_lock:
        _stops[threading.get_ident()] = asked_to_stop
    try:
        while proc.poll() is None:
            reason = None
            if deadline is not None and time.monotonic() > deadline:
                reason = "timeout"
            elif asked_to_stop.is_set() or (should_cancel is not None and should_cancel()):
                reason = "cancel"
            elif in_worker and not threading.main_thread().is_alive():
                reason = "cancel"  # the flow process is shutting down under us
            if reason:
                log.warning("stopping %s (%s): %s", label, reason, stop.describe())
                stop_process(proc, stop, log)
                return reason
            try:
                proc.wait(timeout=POLL_SECONDS)  # returns as soon as the process exits
            except subprocess.TimeoutExpired:
                pass
        return None
    finally:
        with _stops_lock:
            _stops.pop(threading.get_ident(), None)


def _drain(exited: threading.Event, followers: list[Follower], seconds: float) -> None:
    """The child has exited: let the followers read what is left of its output."""
    exited.set()
    for follower in followers:
        follower.join(timeout=seconds)


__all__ = [
    "BASE_ENV",
    "ProcessResult",
    "default_logger",
    "use_run_logger",
    "group_alive",
    "inherited_env",
    "run",
    "stop_runs_in",
    "which",
]
