"""Each tool stopped by its own protocol, against real processes (tools/stopping.py).

The stand-in tool is a Python program that logs every signal it gets, as does a child it starts in its
process group (the way Terraform starts its provider plugins). Terraform's protocol: exactly one SIGINT, to
terraform alone, then a long wait for its graceful stop; SIGKILL of the whole group only as the last resort.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tools import process
from tools.errors import ProcessCancelled, ProcessTimeout
from tools.stopping import group_alive, interrupt_once

# argv: log file, seconds the graceful stop takes (-1: ignore SIGINT), "child" to start a plugin child.
TOOL = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    log, stop_takes = sys.argv[1], float(sys.argv[2])
    role = "child" if len(sys.argv) > 3 and sys.argv[3] == "as-child" else "tool"
    def note(text):
        with open(log, "a") as fh:
            fh.write(f"{role} {text}\\n")
    stopping = []
    def on_signal(signum, frame):
        note(signal.Signals(signum).name)
        if signum == signal.SIGINT and stop_takes >= 0:
            stopping.append(time.monotonic())
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    child = None
    if role == "tool" and len(sys.argv) > 3 and sys.argv[3] == "child":
        child = subprocess.Popen([sys.executable, __file__, log, "-1", "as-child"])
    note(f"started {os.getpid()}")
    while True:
        if stopping and time.monotonic() - stopping[0] >= stop_takes:
            note("state written")
            if child is not None:
                child.kill()
                child.wait()
            sys.exit(0)
        print("working", flush=True)
        time.sleep(0.1)
    """
)


@pytest.fixture
def tool(tmp_path: Path) -> Path:
    path = tmp_path / "tool.py"
    path.write_text(TOOL)
    return path


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "signals.log"
    return path.read_text().splitlines() if path.exists() else []


def _wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_one_sigint_to_the_tool_alone_then_it_finishes_its_graceful_stop(tool: Path, tmp_path: Path) -> None:
    log = tmp_path / "signals.log"
    argv = [sys.executable, str(tool), str(log), "3", "child"]
    started = time.monotonic()
    cancel_at = started + 2  # after both have installed their handlers
    with pytest.raises(ProcessCancelled):
        process.run(argv, should_cancel=lambda: time.monotonic() > cancel_at, stop=interrupt_once(60))
    lines = _log(tmp_path)
    assert lines.count("tool SIGINT") == 1, lines
    assert "tool SIGTERM" not in lines, lines
    assert not any(line.startswith("child SIG") for line in lines), f"the plugin was signalled: {lines}"
    assert "tool state written" in lines, lines
    assert time.monotonic() - started >= 5, "the graceful stop was cut short"


def test_a_tool_that_ignores_its_sigint_loses_its_whole_group_after_the_window(
    tool: Path, tmp_path: Path
) -> None:
    log = tmp_path / "signals.log"
    argv = [sys.executable, str(tool), str(log), "-1", "child"]
    with pytest.raises(ProcessTimeout) as raised:
        process.run(argv, timeout=2, stop=interrupt_once(2))
    lines = _log(tmp_path)
    assert lines.count("tool SIGINT") == 1 and "tool SIGTERM" not in lines, lines
    tool_pid = int(next(line for line in lines if line.startswith("tool started")).split()[-1])
    child_pid = int(next(line for line in lines if line.startswith("child started")).split()[-1])
    assert not group_alive(tool_pid), "a plugin outlived the last resort"
    assert not _pid_alive(child_pid)
    assert "SIGKILL" in str(raised.value) or "SIGINT" in str(raised.value)


RUNNER = textwrap.dedent(
    """
    import sys
    from tools import process
    script = 'i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.1; done; echo done > "$1"'
    process.run(["sh", "-c", script, "sh", sys.argv[1]])
    """
)


def test_a_tool_outlives_its_sigkilled_flow_process(tmp_path: Path) -> None:
    """The worker host's flow process dies (SIGKILL): the tool must finish (Terraform writes its state).
    With pipes its next line would kill it with SIGPIPE; the runner gives it files to write to."""
    done = tmp_path / "done"
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(done)], cwd=Path(__file__).parents[2], env=os.environ
    )
    time.sleep(2)
    assert runner.poll() is None
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert _wait_for(done.exists, 30), "the tool died with its flow process"


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
