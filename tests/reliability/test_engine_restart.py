"""Fault: the Docker engine restarts between two runs of refresh-servers. The restart=always service
container comes back with the engine by itself, and the next run works and finds nothing to change.

This restarts the sandbox's own engine (a real daemon restart), so it runs only when the sandbox started
that engine (never a user's Docker), and only in a test session where nothing else uses the engine at the
same time (CI runs one session)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from devenv.dockerd import docker_ping, restart_docker
from devenv.sandbox_state import State
from flows.refresh import AnsibleTarget, refresh_servers
from tests.conftest import TEST_LABEL
from tests.sshd import free_port, wait_http_ok
from tools.settings import state_dir

pytestmark = [pytest.mark.reliability, pytest.mark.exclusive]  # restarts the shared engine


def engine_is_ours() -> bool:
    path = state_dir() / "sandbox.json"
    return path.exists() and bool(json.loads(path.read_text()).get("docker", {}).get("started"))


@pytest.mark.skipif(not engine_is_ours(), reason="the Docker engine is not the sandbox's own: not restarted")
def test_engine_restart_between_runs(blocks, docker_client, sandbox_env, workdir: Path) -> None:
    name, port = f"xwiki-restart-{uuid.uuid4().hex[:8]}", free_port()
    target = AnsibleTarget(
        limit="xwiki",
        extra_vars={
            "xwiki_container_name": name,
            "xwiki_port": port,
            "xwiki_labels": {TEST_LABEL: "1"},
            "target_root": str(workdir / "xwiki-root"),
        },
    )
    first = refresh_servers(target=target)
    assert first.ok
    before = docker_client.containers.get(name).attrs["State"]["StartedAt"]

    host = restart_docker()
    assert host == sandbox_env["DOCKER_HOST"] and docker_ping(host)
    # restarted from this session, the engine still has a TMPDIR of its own (this session's is deleted
    # when it ends, and every later build would fail)
    pid = State.load().component("docker")["pid"]
    environ = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry
    )
    assert environ["TMPDIR"] == str(state_dir() / "docker-tmp"), environ.get("TMPDIR")

    end = time.monotonic() + 90
    while time.monotonic() < end:
        container = docker_client.containers.get(name)
        if container.status == "running" and container.attrs["State"]["StartedAt"] != before:
            break
        time.sleep(0.5)
    assert container.status == "running", "restart=always did not bring the container back"
    assert "xwiki stand-in" in wait_http_ok(f"http://127.0.0.1:{port}/", 90)

    again = refresh_servers(target=target)
    assert again.ok and again.hosts[0].changed == 0, again.changes
