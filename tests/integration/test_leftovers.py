"""The end-of-session leftover check (tests/leftovers.py) finds a tool process tied to the session's TMPDIR,
by its environment or its working directory, and nothing once it has exited."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests import leftovers


def _fake_terraform(workdir: Path) -> str:
    """A copy of `sleep` named terraform: argv[0] and the executable are both `.../terraform`."""
    exe = workdir / "bin" / "terraform"
    exe.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    return str(exe)


def test_a_tool_with_the_sessions_tmpdir_is_found_then_gone_after_it_exits(workdir: Path) -> None:
    session = workdir / "session"
    session.mkdir()
    exe = _fake_terraform(workdir)
    proc = subprocess.Popen([exe, "30"], env={**os.environ, "TMPDIR": str(session)}, cwd=workdir)
    other = subprocess.Popen([exe, "30"], env={**os.environ, "TMPDIR": str(workdir)}, cwd=workdir)
    try:
        time.sleep(0.2)
        found = leftovers.tool_processes(session)
        assert [p.pid for p in found] == [proc.pid], found  # not the one of another "session"
        assert found[0].argv == [exe, "30"] and found[0].cwd == str(workdir)
        assert str(proc.pid) in str(found[0]) and exe in str(found[0])
        proc.terminate()
        proc.wait(timeout=10)
        assert leftovers.check(session, wait=5) == []
    finally:
        for p in (proc, other):
            p.kill()
            p.wait(timeout=10)


def test_a_tool_working_under_the_session_tmpdir_is_found_and_waited_for(workdir: Path) -> None:
    session = workdir / "session"
    (session / "tf").mkdir(parents=True)
    exe = _fake_terraform(workdir)
    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"}
    proc = subprocess.Popen([exe, "2"], env=env, cwd=session / "tf")
    try:
        time.sleep(0.2)
        assert [p.pid for p in leftovers.tool_processes(session)] == [proc.pid]
        started = time.monotonic()
        assert leftovers.check(session, wait=30) == []  # a straggler that exits within the wait is fine
        assert time.monotonic() - started < 20
        assert leftovers.main([str(session)]) == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_only_tools_count() -> None:
    assert leftovers.is_tool(["/usr/bin/terraform", "apply"])
    assert leftovers.is_tool([".terraform/providers/x/terraform-provider-aws_v5.0.0_x5"])
    assert leftovers.is_tool(["/usr/bin/python3", "/venv/bin/ansible-playbook", "play.yml"])
    assert leftovers.is_tool(["packer-plugin-amazon", "plugin"])
    assert not leftovers.is_tool(["/venv/bin/python", "-m", "prefect", "server", "start"])
    assert not leftovers.is_tool(["/venv/bin/moto_server", "-p", "5000"])
    assert not leftovers.is_tool(["dockerd", "--host", "unix:///x"])
