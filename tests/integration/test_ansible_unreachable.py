"""Issue 15.8 against the real ansible-core: a host that is unreachable during a loop task is reported
with its SSH/connection error (the runner event's `msg`), in the result, the recap row and the error,
never with the loop's generic "All items completed"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sshd import client_key, free_port, ssh_host_line
from tools.ansible import PlaybookSpec, run_playbook
from tools.errors import AnsibleRunFailed

pytestmark = pytest.mark.integration


def test_unreachable_host_in_a_loop_reports_the_connection_error(workdir: Path) -> None:
    key = client_key(workdir)
    inventory = ssh_host_line("ghost", free_port(), key, workdir / "known_hosts", workdir / "ghost") + "\n"
    project = workdir / "project"
    project.mkdir()
    (project / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: 'true {{ item }}'\n      loop: [python3, openssh-server]\n"
    )
    (project / "inventory.ini").write_text(inventory)
    result = run_playbook(PlaybookSpec(playbook="play.yml", inventory="inventory.ini"), project_dir=project)
    assert result.failed_hosts == ["ghost"]
    [failure] = result.failures
    assert failure.unreachable, failure
    assert "all items completed" not in failure.message.lower(), failure.message
    assert "refused" in failure.message.lower() or "connect" in failure.message.lower(), failure.message
    [row] = result.table()
    assert row["reason"] == failure.message
    with pytest.raises(AnsibleRunFailed) as info:
        result.raise_for_failures()
    assert failure.message in str(info.value)
