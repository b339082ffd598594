"""What the process runner (tools/process.py) keeps of a tool's output while it runs.

The child writes stdout and stderr to two unlinked files; a `Follower` thread per file hands each complete
line to the `Output`, which redacts it, keeps the bounded tails an error carries, captures stdout when
asked, shows the line to the caller's handler and logs it. `ProcessResult` is what a finished run returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tools.errors import TAIL_LINES
from tools.redact import redact

LineHandler = Callable[[str, str], None]  # (stream name, redacted line)

FOLLOW_SECONDS = 0.05


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


class Output:
    """The sink of both followers: each line redacted, kept in the tails, captured, handled, logged."""

    def __init__(
        self,
        label: str,
        log: logging.Logger | logging.LoggerAdapter,
        on_line: LineHandler | None = None,
        log_line: Callable[[str, str], bool] | None = None,
        capture_stdout: bool = False,
    ) -> None:
        self.label, self.log = label, log
        self.on_line, self.log_line, self.capture_stdout = on_line, log_line, capture_stdout
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stderr_tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stdout_lines: list[str] = []
        self._lock = threading.Lock()
        self._handler_failed = threading.Event()

    def __call__(self, stream: str, line: str) -> None:
        line = redact(line)
        with self._lock:
            self.tail.append(line)
            if stream == "stderr":
                self.stderr_tail.append(line)
            elif self.capture_stdout:
                self.stdout_lines.append(line)
        if self.on_line is not None:
            try:
                self.on_line(stream, line)
            except Exception:  # a caller's handler must not stop the following (Packer's artifact line)
                if not self._handler_failed.is_set():
                    self._handler_failed.set()
                    self.log.exception(
                        "%s: the line handler failed (logged once; output still followed)", self.label
                    )
        if self.log_line is None or self.log_line(stream, line):
            self.log.info("%s", line)

    def result(self, argv: list[str], exit_code: int, duration: float) -> ProcessResult:
        return ProcessResult(
            argv=argv,
            exit_code=exit_code,
            tail=list(self.tail),
            duration=duration,
            stdout="\n".join(self.stdout_lines),
            stderr_tail=list(self.stderr_tail),
        )


class Follower(threading.Thread):
    """Follows a file the child writes and hands each complete line to the sink; ends when `done` is set
    (the child exited) and the file is drained."""

    def __init__(self, name: str, path: int, sink: Callable[[str, str], None], done: threading.Event) -> None:
        super().__init__(name=f"process-follower-{name}", daemon=True)
        self.stream_name, self.sink, self.done = name, sink, done
        self.file = open(f"/proc/self/fd/{path}", "rb")  # noqa: SIM115 - its own offset; closed in run()

    def run(self) -> None:
        pending = b""
        try:
            while True:
                finished = self.done.is_set()  # read before draining: nothing is written after it is set
                chunk = self.file.read(65536)
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for raw in lines:
                        self._emit(raw)
                    continue
                if finished:
                    break
                time.sleep(FOLLOW_SECONDS)
            if pending:
                self._emit(pending)
        finally:
            self.file.close()

    def _emit(self, raw: bytes) -> None:
        self.sink(self.stream_name, raw.decode("utf-8", errors="replace").rstrip("\r"))
