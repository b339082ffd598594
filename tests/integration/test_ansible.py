"""tools.ansible against the real ansible-runner / ansible-core: local and SSH targets, cancel."""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.sshd import SshServer, client_key, free_port, ssh_host_line
from tools.ansible import PDD_PREFIX, PlaybookSpec, processes_of_run, run_playbook
from tools.errors import InvalidInput, ProcessCancelled

pytestmark = pytest.mark.integration


def _project(workdir: Path, tasks: str, inventory: str) -> Path:
    project = workdir / "project"
    project.mkdir()
    (project / "play.yml").write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}")
    (project / "inventory.ini").write_text(inventory)
    return project


LOCAL = 'localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n'


def test_ansible_runner_pings_localhost(workdir: Path) -> None:
    project = _project(workdir, "    - ansible.builtin.ping:\n", LOCAL)
    events: list[str] = []
    result = run_playbook(
        PlaybookSpec(playbook="play.yml", inventory="inventory.ini"),
        project_dir=project,
        on_event=lambda e: events.append(e["event"]),
    )
    assert result.ok and result.status == "successful"
    [host] = result.hosts
    assert (host.host, host.ok, host.failed, host.unreachable) == ("localhost", 1, 0, 0)
    assert "runner_on_ok" in events and events[-1] == "playbook_on_stats"  # streamed as they happened


def test_ssh_target_and_limit_validation(workdir: Path) -> None:
    key = client_key(workdir)
    server = SshServer(workdir / "sshd").start(key)
    try:
        inventory = "[internal]\n" + ssh_host_line(
            "web1", server.port, key, workdir / "known_hosts", workdir / "web1"
        )
        project = _project(
            workdir, "    - ansible.builtin.ping:\n    - ansible.builtin.command: hostname\n", inventory
        )
        with pytest.raises(InvalidInput, match="matches no host.*web1"):
            run_playbook(
                PlaybookSpec(playbook="play.yml", inventory="inventory.ini", limit="nope*"),
                project_dir=project,
            )
        with pytest.raises(InvalidInput, match="does not exist"):
            run_playbook(PlaybookSpec(playbook="play.yml", inventory="missing.ini"), project_dir=project)
        result = run_playbook(
            PlaybookSpec(playbook="play.yml", inventory="inventory.ini", limit="web*"), project_dir=project
        )
        assert result.ok, result.tail
        assert [(h.host, h.ok) for h in result.hosts] == [("web1", 2)]
    finally:
        server.stop()


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_cancel_kills_ansible_and_its_children(workdir: Path) -> None:
    marker = f"{random.randint(100000, 999999)}.5"  # a unique `sleep` argument to find the module's child
    tasks = f"    - ansible.builtin.shell: sleep {marker} | cat\n"
    project = _project(workdir, tasks, LOCAL)
    cancel = threading.Event()
    outcome: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            run_playbook(
                PlaybookSpec(playbook="play.yml", inventory="inventory.ini"),
                project_dir=project,
                should_cancel=cancel.is_set,
            )
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    before = {p.name for p in Path(tempfile.gettempdir()).glob(PDD_PREFIX + "*")}
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not _processes_with(f"sleep {marker}"):
        assert time.monotonic() < deadline, "the long task never started"
        assert thread.is_alive(), f"run ended early: {outcome}"
        time.sleep(0.2)
    runs = [p for p in Path(tempfile.gettempdir()).glob(PDD_PREFIX + "*") if p.name not in before]
    assert runs and processes_of_run(runs[0])  # the tree carries the run's marker
    cancel.set()
    thread.join(timeout=90)
    assert not thread.is_alive(), "run_playbook did not return after cancel"
    assert isinstance(outcome["error"], ProcessCancelled)
    end = time.monotonic() + 15
    while _processes_with(f"sleep {marker}") and time.monotonic() < end:
        time.sleep(0.2)
    assert _processes_with(f"sleep {marker}") == []
    assert processes_of_run(runs[0]) == []
    assert not runs[0].exists()  # the private data dir is gone


def test_closed_port_is_unreachable(workdir: Path) -> None:
    key = client_key(workdir)
    inventory = ssh_host_line("ghost", free_port(), key, workdir / "known_hosts", workdir / "ghost") + "\n"
    project = _project(workdir, "    - ansible.builtin.ping:\n", inventory)
    result = run_playbook(PlaybookSpec(playbook="play.yml", inventory="inventory.ini"), project_dir=project)
    assert not result.ok
    assert result.failed_hosts == ["ghost"]
    assert result.failures[0].unreachable and "refused" in result.failures[0].message.lower()
