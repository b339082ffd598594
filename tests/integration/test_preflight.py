"""Pre-flight checks with the real tools: terraform validate, ansible-playbook --syntax-check and
ansible-lint, hadolint. A finding fails with the tool's own message before any change; a pass is
remembered for the same files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flows.refresh import AnsibleTarget, refresh_servers
from tasks.preflight import check_dockerfile, check_playbook, validate_stack
from tools import lint
from tools.errors import PreflightFailed
from tools.settings import INFRA_DIR
from tools.terraform_runner import Runner
from tools.terraform_workspace import Workspace

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def own_marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVOPS_CHECK_MARKS", str(tmp_path / "marks"))


def test_terraform_validate_reports_terraform_own_error_and_remembers_a_pass(tmp_path: Path) -> None:
    stack = tmp_path / "terraform" / "broken"
    stack.mkdir(parents=True)
    (stack / "main.tf").write_text('resource "aws_security_group" "x" {\n  nmae = "typo"\n}\n')
    runner = Runner(Workspace(stack="broken", root=str(tmp_path), path=str(stack), state_key="none"))
    findings = lint.terraform_validate(runner)
    assert any("main.tf:2" in f and "Unsupported argument" in f for f in findings), findings

    started = time.monotonic()
    validate_stack.fn("sandbox/smoke")  # the real stack passes
    first = time.monotonic() - started
    started = time.monotonic()
    validate_stack.fn("sandbox/smoke")  # remembered: no terraform runs
    assert time.monotonic() - started < first / 2, (first, time.monotonic() - started)


def test_ansible_syntax_and_lint_findings_fail_before_any_change(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_connection=local\n")
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - ansible.builtin.debug: msg=hi\n      bogus_keyword: 1\n")
    with pytest.raises(PreflightFailed, match="syntax-check|bogus_keyword") as caught:
        check_playbook.fn(str(broken), str(inventory), str(INFRA_DIR / "ansible"))
    assert caught.value.tail

    marker = tmp_path / "ran"
    unnamed = tmp_path / "unnamed.yml"
    unnamed.write_text(
        f"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.file:\n"
        f"        path: {marker}\n        state: touch\n"
    )
    with pytest.raises(PreflightFailed, match="name") as caught:
        check_playbook.fn(str(unnamed), str(inventory), str(INFRA_DIR / "ansible"))
    assert not marker.exists()

    check_playbook.fn("internal_hosts.yml", "inventory.ini", str(INFRA_DIR / "ansible"))  # the project's pass


def test_refresh_servers_stops_at_the_lint_finding(blocks, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    play = tmp_path / "play.yml"
    play.write_text(
        f"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.shell: touch {marker}\n"
    )
    inventory = tmp_path / "local.ini"
    inventory.write_text(
        'localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    state = refresh_servers(
        target=AnsibleTarget(playbook=str(play), inventory=str(inventory)), return_state=True
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, PreflightFailed) and "ansible" in str(error), repr(error)
    assert not marker.exists()  # the playbook never ran


def test_hadolint_findings_and_the_app_dockerfile(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    with pytest.raises(PreflightFailed, match="DL3006|DL3008|DL3009|DL3015") as caught:
        check_dockerfile.fn(str(dockerfile))
    assert all("Dockerfile" in line for line in caught.value.tail), caught.value.tail
    check_dockerfile.fn(str(INFRA_DIR / "apps" / "hire-help" / "Dockerfile"))  # with its .hadolint.yaml
