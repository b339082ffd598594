"""refresh-servers against the sandbox: self-healing container, SSH hosts, vault secrecy, cancel."""

from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from blocks import Secret
from flows.refresh import AnsibleTarget, refresh_servers
from tests.conftest import TEST_LABEL, read_flow_run_logs
from tests.sshd import SshServer, client_key, flow_run_artifacts, free_port, ssh_host_line, wait_http_ok
from tools.ansible import ANSIBLE_DIR, PDD_PREFIX
from tools.errors import AnsibleRunFailed

pytestmark = pytest.mark.e2e

VAULT_PASSWORD = (ANSIBLE_DIR / "sandbox-vault-password").read_text().strip()
DB_PASSWORD = "xwiki-db-pass-8d41b7f2"  # the vaulted value in host_vars/xwiki


def _xwiki_vars(workdir: Path, name: str, port: int) -> dict:
    return {
        "xwiki_container_name": name,
        "xwiki_port": port,
        "xwiki_labels": {TEST_LABEL: "1"},
        "target_root": str(workdir / "xwiki-root"),
    }


def test_self_healing_container_and_vault_secrecy(blocks, docker_client, workdir: Path) -> None:  # noqa: ANN001
    name, port = f"xwiki-test-{uuid.uuid4().hex[:8]}", free_port()
    target = AnsibleTarget(limit="xwiki", extra_vars=_xwiki_vars(workdir, name, port))

    first = refresh_servers(target=target)
    assert "xwiki stand-in" in wait_http_ok(f"http://127.0.0.1:{port}/")
    container = docker_client.containers.get(name)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert f"DB_PASSWORD={DB_PASSWORD}" in container.attrs["Config"]["Env"]  # decrypted from the vault
    assert first.hosts[0].host == "xwiki"

    container.remove(force=True)  # evil spirits
    state = refresh_servers(target=target, return_state=True)
    healed = state.result()
    [recap] = healed.hosts
    assert recap.changed >= 1 and recap.failed == 0
    assert "Run xwiki container" in [c.task for c in healed.changes]
    assert "xwiki stand-in" in wait_http_ok(f"http://127.0.0.1:{port}/")

    again = refresh_servers(target=target)
    assert again.hosts[0].changed == 0, again.changes

    # the secrets never show: logs, artifacts, the result, what is left on disk
    flow_run_id = state.state_details.flow_run_id
    logs = "\n".join(read_flow_run_logs(flow_run_id))
    assert "PLAY RECAP" in logs and "Run xwiki container" in logs  # events were streamed
    artifacts = flow_run_artifacts(flow_run_id)
    assert {a.key for a in artifacts} >= {"refresh-recap"}
    for text in [logs, healed.model_dump_json(), *(str(a.data) + str(a.description) for a in artifacts)]:
        assert VAULT_PASSWORD not in text
        assert DB_PASSWORD not in text
    used = re.findall(rf"ansible-runner run (\S*{PDD_PREFIX}\S+)", logs)
    assert used and not any(Path(p).exists() for p in used)  # the private data dir was deleted
    for path in workdir.rglob("*"):
        if path.is_file():
            assert VAULT_PASSWORD not in path.read_text(errors="ignore")


def test_wrong_vault_password_fails_clearly(blocks, workdir: Path) -> None:  # noqa: ANN001
    block = f"wrong-vault-{uuid.uuid4().hex[:8]}"
    wrong = f"not-the-password-{uuid.uuid4().hex[:6]}"
    Secret(value=wrong).save(block, overwrite=True)
    target = AnsibleTarget(
        limit="xwiki", extra_vars=_xwiki_vars(workdir, f"xwiki-wrong-{uuid.uuid4().hex[:6]}", 1)
    )
    state = refresh_servers(target=target, vault_block=block, return_state=True)
    assert state.is_failed()
    with pytest.raises(AnsibleRunFailed) as info:
        state.result()
    text = str(info.value)
    assert "xwiki" in text and "Run xwiki container" in text and "Decryption failed" in text
    assert info.value.hint and "vault password" in info.value.hint
    logs = "\n".join(read_flow_run_logs(state.state_details.flow_run_id))
    assert wrong not in logs and wrong not in text


@pytest.fixture
def three_hosts(workdir: Path):  # noqa: ANN201
    """web1 healthy, web2 missing a base package, web3 a closed SSH port."""
    key = client_key(workdir)
    known = workdir / "known_hosts"
    servers = [SshServer(workdir / "sshd1").start(key), SshServer(workdir / "sshd2").start(key)]
    lines = [
        "[internal]",
        ssh_host_line("web1", servers[0].port, key, known, workdir / "web1"),
        ssh_host_line(
            "web2",
            servers[1].port,
            key,
            known,
            workdir / "web2",
            base_packages='["python3","devops-flows-no-such-package"]',
        ),
        ssh_host_line("web3", free_port(), key, known, workdir / "web3"),
        "[docker_hosts]",
        "",
    ]
    inventory = workdir / "inventory.ini"
    inventory.write_text("\n".join(lines))
    yield inventory
    for server in servers:
        server.stop()


def test_failed_and_unreachable_hosts_fail_the_run_others_refreshed(
    blocks, three_hosts: Path, workdir
) -> None:  # noqa: ANN001
    state = refresh_servers(target=AnsibleTarget(inventory=str(three_hosts)), return_state=True)
    assert state.is_failed()
    with pytest.raises(AnsibleRunFailed) as info:
        state.result()
    text = str(info.value)
    assert "web2" in text and "web3" in text and "web1" not in text.split("\n")[0]
    assert "Check that the base packages are installed" in text and "unreachable" in text
    managed = workdir / "web1" / "etc/ssh/sshd_config.d/10-devops.conf"
    assert "PasswordAuthentication no" in managed.read_text()  # the healthy host was refreshed
    [recap] = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.key == "refresh-recap"]
    rows = {row["host"]: row for row in recap.data} if isinstance(recap.data, list) else None
    if rows is None:
        import json

        rows = {row["host"]: row for row in json.loads(recap.data)}
    assert sorted(rows) == ["web1", "web2", "web3"]
    assert rows["web1"]["changed"] >= 1 and rows["web2"]["failed"] == 1 and rows["web3"]["unreachable"] == 1


def test_cancel_stops_ansible_and_its_children(blocks, workdir: Path) -> None:  # noqa: ANN001
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    marker = f"{uuid.uuid4().int % 900000 + 100000}.25"
    project_play = workdir / "long.yml"
    project_play.write_text(
        f"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.shell: sleep {marker} | cat\n"
    )
    inventory = workdir / "local.ini"
    inventory.write_text(
        'localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    states: list = []
    thread = threading.Thread(
        target=lambda: states.append(
            refresh_servers(
                target=AnsibleTarget(playbook=str(project_play), inventory=str(inventory)), return_state=True
            )
        ),
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 120
    while not _sleepers(marker):
        assert time.monotonic() < deadline and thread.is_alive(), "the long task never started"
        time.sleep(0.2)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=20, sort="START_TIME_DESC")
        [run] = [
            r
            for r in runs
            if r.state
            and r.state.is_running()
            and r.flow_id
            and client.read_flow(r.flow_id).name == "refresh-servers"
        ][:1]
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the flow did not stop after cancel"
    end = time.monotonic() + 15
    while _sleepers(marker) and time.monotonic() < end:
        time.sleep(0.2)
    assert _sleepers(marker) == []
    assert not states[0].is_completed()


def _sleepers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"sleep {marker}".encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
