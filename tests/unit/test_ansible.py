"""Unit tests of the Ansible wrapper's builders and parsers (no Ansible run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.ansible import (
    PlaybookResult,
    PlaybookSpec,
    build_argv,
    check_extra_vars,
    parse_events,
)
from tools.errors import AnsibleRunFailed, InvalidInput


def _event(counter: int, kind: str, stdout: str = "", **data) -> dict:
    return {"counter": counter, "event": kind, "stdout": stdout, "event_data": data}


EVENTS = [
    _event(1, "playbook_on_start"),
    _event(
        2,
        "runner_on_file_diff",
        "--- before\r\n+++ after\r\n-PasswordAuthentication yes\r\n+PasswordAuthentication no",
        host="web1",
        task="Harden sshd",
        task_uuid="t1",
        role="ssh",
    ),
    _event(
        3,
        "runner_on_ok",
        "changed: [web1]",
        host="web1",
        task="Harden sshd",
        task_uuid="t1",
        role="ssh",
        res={"changed": True},
    ),
    _event(
        4,
        "runner_on_ok",
        "ok: [web2]",
        host="web2",
        task="Harden sshd",
        task_uuid="t1",
        res={"changed": False},
    ),
    _event(
        5,
        "runner_on_failed",
        "fatal: [web2]: FAILED!",
        host="web2",
        task="Check that the base packages are installed",
        res={
            "msg": "One or more items failed",
            "results": [
                {"item": "python3", "failed": False},
                {
                    "item": "no-such-pkg",
                    "failed": True,
                    "stderr": "dpkg-query: no packages found matching no-such-pkg",
                },
            ],
        },
    ),
    _event(
        6,
        "runner_on_failed",
        "fatal: [web1]: FAILED! ignored",
        host="web1",
        task="optional",
        ignore_errors=True,
        res={"msg": "ignored"},
    ),
    _event(
        7,
        "runner_on_unreachable",
        "fatal: [web3]: UNREACHABLE!",
        host="web3",
        task="Harden sshd",
        res={"msg": "Failed to connect to the host via ssh: Connection refused", "unreachable": True},
    ),
    _event(
        8,
        "runner_on_failed",
        "[ERROR]: Task failed: Decryption failed (no vault secrets were found)\r\nfatal",
        host="xwiki",
        task="Run xwiki container",
        res={"censored": "hidden due to no_log", "changed": False},
    ),
    _event(
        9,
        "playbook_on_stats",
        "PLAY RECAP",
        ok={"web1": 3, "web2": 1, "xwiki": 2},
        changed={"web1": 1},
        failures={"web2": 1, "xwiki": 1},
        dark={"web3": 1},
        skipped={},
        rescued={},
        ignored={"web1": 1},
        processed={"web1": 1, "web2": 1, "web3": 1},
    ),
]


def test_parse_events_recap_failures_and_changes() -> None:
    parsed = parse_events(reversed(EVENTS))  # order is restored by counter
    recap = {h.host: h for h in parsed["hosts"]}
    assert sorted(recap) == ["web1", "web2", "web3", "xwiki"]
    assert (recap["web1"].ok, recap["web1"].changed, recap["web1"].ignored) == (3, 1, 1)
    assert recap["web2"].failed == 1 and recap["web3"].unreachable == 1
    failures = {f.host: f for f in parsed["failures"]}
    assert "web1" not in failures  # ignore_errors does not count
    assert failures["web2"].task == "Check that the base packages are installed"
    assert "no-such-pkg" in failures["web2"].message
    assert failures["web3"].unreachable and "Connection refused" in failures["web3"].message
    assert "Decryption failed" in failures["xwiki"].message  # no_log result: Ansible's [ERROR] line instead
    [change] = parsed["changes"]
    assert (change.host, change.task, change.role) == ("web1", "Harden sshd", "ssh")
    assert "+PasswordAuthentication no" in change.diff and "\r" not in change.diff


def test_result_raises_naming_hosts_and_tasks() -> None:
    result = PlaybookResult(
        playbook="internal_hosts.yml", exit_code=2, status="failed", **parse_events(EVENTS)
    )
    assert result.failed_hosts == ["web2", "web3", "xwiki"]
    assert result.changed_hosts == ["web1"]
    with pytest.raises(AnsibleRunFailed) as info:
        result.raise_for_failures()
    text = str(info.value)
    assert "web2" in text and "web3" in text and "unreachable" in text
    assert "Check that the base packages are installed" in text
    assert info.value.hint and "vault" in info.value.hint
    rows = {row["host"]: row for row in result.table()}
    assert rows["web3"]["failing task"] == "(unreachable)"
    assert rows["web1"]["failing task"] == ""


def test_successful_result_does_not_raise() -> None:
    ok = [
        e
        for e in EVENTS
        if e["event"] not in ("runner_on_failed", "runner_on_unreachable", "playbook_on_stats")
    ]
    ok.append(_event(10, "playbook_on_stats", ok={"web1": 3}, changed={"web1": 1}))
    result = PlaybookResult(playbook="p.yml", exit_code=0, status="successful", **parse_events(ok))
    result.raise_for_failures()
    assert result.ok


@pytest.mark.parametrize(
    "extra",
    [
        {"db_password": "x"},
        {"API_TOKEN": "x"},
        {"ssh_key": "x"},
        {"aws": {"secret_access": "x"}},
        {"Passwd": 1},
    ],
)
def test_secret_looking_extra_vars_are_rejected(extra: dict) -> None:
    with pytest.raises(InvalidInput, match="looks like a secret"):
        check_extra_vars(extra)


def test_plain_extra_vars_pass() -> None:
    check_extra_vars({"xwiki_port": 8080, "xwiki_labels": {"team": "devops"}, "image": "x:1"})


def test_build_argv_has_no_secret_and_passes_options() -> None:
    spec = PlaybookSpec(
        limit="web*:!web3", tags="ssh,xwiki", check=True, diff=True, forks=3, extra_vars={"xwiki_port": 1}
    )
    pdd = Path("/tmp/pdd")
    argv = build_argv(spec, pdd, "abc", Path("/repo/infra/ansible/internal_hosts.yml"), Path("/inv.ini"))
    assert argv[1:3] == ["run", "/tmp/pdd"]
    assert argv[argv.index("--project-dir") + 1] == "/repo/infra/ansible"
    assert argv[argv.index("-p") + 1] == "internal_hosts.yml"
    assert argv[argv.index("--limit") + 1] == "web*:!web3"
    assert argv[argv.index("--forks") + 1] == "3"
    assert "-j" in argv
    assert "--cmdline=--check --diff --tags ssh,xwiki" in argv
    assert not any("xwiki_port" in a for a in argv)  # extra vars go to env/extravars, not argv
