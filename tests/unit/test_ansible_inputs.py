"""Ansible inputs are validated in this process: bad ones are rejected and no process is ever started
(counted with audit events, tests.spawn_count); an unreachable host's real reason is kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.refresh import AnsibleTarget
from tests.spawn_count import SpawnCounter
from tools.ansible import ANSIBLE_DIR, PlaybookResult, PlaybookSpec, parse_events, validate_spec
from tools.ansible_inputs import check_extra_vars, inventory_hosts, resolve_input_file
from tools.ansible_vault import register_vault_values, vault_files
from tools.errors import AnsibleRunFailed, InvalidInput
from tools.redact import redact

VAULT_PASSWORD = (ANSIBLE_DIR / "sandbox-vault-password").read_text().strip()
VAULTED_DB_PASSWORD = "xwiki-db-pass-8d41b7f2"  # the value vaulted in infra/ansible/host_vars/xwiki


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "play.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "inventory.ini").write_text("[web]\nweb1\nweb2\nweb3\n[db]\ndb1\n")
    return tmp_path


def test_valid_spec_passes_and_starts_no_process(project: Path) -> None:
    with SpawnCounter() as spawned:
        _, _, hosts = validate_spec(
            PlaybookSpec(playbook="play.yml", limit="web*:!web3"), project_dir=project
        )
    assert hosts == ["web1", "web2"]
    assert spawned.count == 0, spawned.events


@pytest.mark.parametrize(
    "over, message",
    [
        pytest.param({"inventory": "missing.ini"}, "does not exist", id="missing"),
        pytest.param({"inventory": "."}, "not a regular file", id="directory"),
        pytest.param({"inventory": "/etc/hosts"}, "outside the Ansible root", id="outside"),
        pytest.param({"inventory": "../../../../../../etc/hosts"}, "outside the Ansible root", id="dotdot"),
        pytest.param({"limit": "nomatch"}, "hosts are: web1, web2, web3, db1", id="limit-no-host"),
    ],
)
def test_bad_paths_and_limits_are_rejected_without_a_process(project: Path, over: dict, message: str) -> None:
    with SpawnCounter() as spawned, pytest.raises(InvalidInput, match=message):
        validate_spec(PlaybookSpec(playbook="play.yml", **over), project_dir=project)
    assert spawned.count == 0, spawned.events


def test_executable_inventory_is_never_run(project: Path) -> None:
    script = project / "dynamic.sh"
    script.write_text(f"#!/bin/sh\ntouch {project}/ran\necho '{{}}'\n")
    script.chmod(0o755)
    with SpawnCounter() as spawned, pytest.raises(InvalidInput, match="is executable"):
        validate_spec(PlaybookSpec(playbook="play.yml", inventory="dynamic.sh"), project_dir=project)
    assert spawned.count == 0 and not (project / "ran").exists()


def test_overlong_and_empty_paths_are_clear_errors_not_oserror(project: Path) -> None:
    for value in ("", "   ", "a" * 300):
        with pytest.raises(InvalidInput):
            resolve_input_file(value, "inventory", project)
    with pytest.raises(ValidationError):
        PlaybookSpec(inventory="")
    with pytest.raises(ValidationError):
        AnsibleTarget(inventory="x" * 300)


def test_the_inventory_is_parsed_only_by_static_plugins(project: Path) -> None:
    (project / "plugin.yml").write_text("plugin: ansible.builtin.constructed\n")
    assert inventory_hosts(project / "plugin.yml") == []
    assert inventory_hosts(project / "inventory.ini", "db1,web1") == ["db1", "web1"]


def test_extra_roots_come_from_the_environment(project: Path, tmp_path_factory, monkeypatch) -> None:  # noqa: ANN001
    other = tmp_path_factory.mktemp("other-root")
    (other / "inv.ini").write_text("h1\n")
    monkeypatch.setenv("DEVOPS_ANSIBLE_ROOTS", "")
    with pytest.raises(InvalidInput, match="outside the Ansible root"):
        resolve_input_file(str(other / "inv.ini"), "inventory", project)
    monkeypatch.setenv("DEVOPS_ANSIBLE_ROOTS", os.pathsep.join(["relative/ignored", str(other)]))
    assert resolve_input_file(str(other / "inv.ini"), "inventory", project) == (other / "inv.ini").resolve()


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"ansible_connection": "local"}, "reserved"),
        ({"ANSIBLE_BECOME": True}, "reserved"),
        ({"ansible_python_interpreter": "/bin/sh"}, "reserved"),
        ({"hostvars": 1}, "reserved"),
        ({"x": "{{ lookup('pipe', 'id') }}"}, "Jinja"),
        ({"x": {"y": ["a", {"z": "{% if 1 %}"}]}}, r"x\.y\[1\]\.z"),
        ({"x": {"{{k}}": 1}}, "Jinja"),
        ({"x": "{# c #}"}, "Jinja"),
        ({"db_pass": "v"}, "looks like a secret"),
        ({"admin_password": "v"}, "looks like a secret"),
        ({"gh_token": "v"}, "looks like a secret"),
        ({"app_secret": "v"}, "looks like a secret"),
        ({"signing_key": "v"}, "looks like a secret"),
        ({"cfg": {"nested": {"api_key": "v"}}}, r"cfg\.nested\.api_key"),
        ({"bad-name": 1}, "must match"),
        ({"x": object()}, "JSON data"),
        ({"x": "v" * 5000}, "longer than"),
    ],
)
def test_extra_vars_rules(extra: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_extra_vars(extra)


def test_plain_extra_vars_and_labels_pass() -> None:
    check_extra_vars(
        {"xwiki_port": 8080, "xwiki_labels": {"devops-flows.test": "1"}, "bypass_cache": True, "monkey": "x"}
    )
    AnsibleTarget(extra_vars={"xwiki_port": 1})
    with pytest.raises(ValidationError, match="reserved"):
        AnsibleTarget(extra_vars={"ansible_user": "root"})


def test_parameter_models_publish_the_patterns_in_their_schema() -> None:
    schema = AnsibleTarget.model_json_schema()["properties"]
    for field in ("playbook", "inventory", "limit", "tags"):
        text = str(schema[field])
        assert "pattern" in text and ("maxLength" in text), field
    assert schema["extra_vars"]["additionalProperties"] is False and schema["extra_vars"]["patternProperties"]


def test_vault_values_are_registered_for_redaction() -> None:
    assert vault_files(ANSIBLE_DIR, ANSIBLE_DIR / "inventory.ini") == [ANSIBLE_DIR / "host_vars" / "xwiki"]
    assert register_vault_values(ANSIBLE_DIR, ANSIBLE_DIR / "inventory.ini", "a-wrong-password") == 0
    assert register_vault_values(ANSIBLE_DIR, ANSIBLE_DIR / "inventory.ini", VAULT_PASSWORD) == 1
    assert VAULTED_DB_PASSWORD not in redact(f"DB_PASSWORD={VAULTED_DB_PASSWORD}")


def test_whole_file_vault_values_are_registered(tmp_path: Path) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(b"whole-file-pass"))])
    (tmp_path / "group_vars").mkdir()
    plain = "api_user: whole-file-user-4411\nnested:\n  - deep-secret-value-9931\n"
    (tmp_path / "group_vars" / "all.yml").write_bytes(vault.encrypt(plain))
    assert register_vault_values(tmp_path, None, "whole-file-pass") >= 2
    assert redact("deep-secret-value-9931 whole-file-user-4411") == "*** ***"


def test_no_log_is_a_literal_in_every_role() -> None:
    for path in (ANSIBLE_DIR / "roles").rglob("*.yml"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("no_log:"):
                assert line.split(":", 1)[1].strip() == "true", f"{path}: {line.strip()}"


def _event(counter: int, kind: str, stdout: str = "", **data) -> dict:  # noqa: ANN003
    return {"counter": counter, "event": kind, "stdout": stdout, "event_data": data}


def test_unreachable_host_in_a_loop_gives_the_connection_error_not_all_items_completed() -> None:
    ssh = (
        "Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 2299: Connection refused"
    )
    res = {
        "msg": "All items completed",
        "unreachable": True,
        "changed": False,
        "results": [{"item": "python3", "unreachable": True, "msg": ssh, "changed": False}],
    }
    events = [
        _event(1, "runner_on_unreachable", "", host="web3", task="Check packages", res=res),
        _event(2, "playbook_on_stats", dark={"web3": 1}, processed={"web3": 1}),
    ]
    result = PlaybookResult(playbook="p.yml", exit_code=4, status="failed", **parse_events(events))
    assert result.failures[0].unreachable and "Connection refused" in result.failures[0].message
    assert "All items completed" not in result.failures[0].message
    [row] = result.table()
    assert row["failing task"] == "(unreachable)" and "Connection refused" in row["reason"]
    with pytest.raises(AnsibleRunFailed, match="Connection refused"):
        result.raise_for_failures()


def test_unreachable_reason_falls_back_to_the_printed_message() -> None:
    stdout = (
        'fatal: [web3]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect: timed out", '
        '"unreachable": true}'
    )
    events = [
        _event(1, "runner_on_unreachable", stdout, host="web3", task="t", res={"msg": "All items completed"})
    ]
    [failure] = parse_events(events)["failures"]
    assert failure.message == "Failed to connect: timed out"
