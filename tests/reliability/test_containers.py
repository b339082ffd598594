"""deploy-app keeps the app's data and configuration: real engine, real registry, real flow runs.

The app container (tests/reliability/apps.py) is first started by hand (as Jenkins or an operator
would have left it) with a named volume, an anonymous volume (the image's VOLUME), a network of its own,
limits, labels, a restart policy, environment, a published port and a command; deploy-app then replaces it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from blocks import slack_webhook
from flows.release import deploy_app
from tests.reliability.apps import App, notes, params
from tests.reliability.helpers import wait_for
from tools import containers
from tools import docker_engine as engine
from tools.errors import AppDown, DeployFailed
from tools.settings import REPO_ROOT

pytestmark = pytest.mark.reliability


def comparable(attrs: dict) -> dict:
    cfg, host = attrs["Config"], attrs["HostConfig"]
    return {
        "image": attrs["Image"],
        "cmd": cfg["Cmd"],
        "env": sorted(cfg["Env"]),
        "labels": cfg["Labels"],
        "mounts": sorted(
            (m["Type"], m.get("Name") or m["Source"], m["Destination"]) for m in attrs["Mounts"]
        ),
        "networks": sorted(attrs["NetworkSettings"]["Networks"]),
        "memory": host["Memory"],
        "cpus": host["NanoCpus"],
        "restart": host["RestartPolicy"],
        "ports": host["PortBindings"],
    }


def test_replace_keeps_named_and_anonymous_volumes(app: App, docker_client) -> None:
    before = docker_client.containers.get(app.name)
    state = deploy_app(params=params(app, app.v2), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    result = state.result()
    assert result.replaced == [before.id]
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    now = docker_client.containers.get(app.name)
    assert now.id == result.container_id and "VERSION=v2" in now.attrs["Config"]["Env"]
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []  # discarded
    # the pin: the previous image keeps a tag, so a prune cannot remove what a restore needs
    pinned = docker_client.images.get(f"{app.v1.partition('@')[0]}:{containers.pin_tag(app.name)}")
    assert pinned.id == before.attrs["Image"]


def test_restore_brings_back_the_full_configuration(app: App, docker_client) -> None:
    before = docker_client.containers.get(app.name)
    state = deploy_app(params=params(app, app.v2, health_path="/no-such-page", timeout=5), return_state=True)
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, DeployFailed) and not isinstance(exc, AppDown), repr(exc)
    restored = docker_client.containers.get(app.name)
    assert restored.status == "running"
    assert comparable(restored.attrs) == comparable(before.attrs)
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failed_restore_is_app_down_and_notifies(app: App, docker_client) -> None:
    """The set-aside container is removed (a real `docker rm`) while the new one fails its health check:
    nothing can be restored, the run fails with AppDown and the webhook gets 'is DOWN'."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    block = f"rel-alerts-{app.uid}"
    slack_webhook(f"http://127.0.0.1:{server.server_port}/hook").save(block, overwrite=True)

    def remove_previous() -> None:
        found = wait_for(
            lambda: engine.find_exact(docker_client, containers.previous_name(app.name)), 120, "set-aside"
        )
        found[0].remove(force=True)

    remover = threading.Thread(target=remove_previous, daemon=True)
    remover.start()
    try:
        state = deploy_app(
            params=params(app, app.v2, health_path="/no-such-page", timeout=20, notify_block=block),
            return_state=True,
        )
    finally:
        remover.join(timeout=130)
        server.shutdown()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, AppDown), repr(exc)
    assert f"{app.name} is DOWN" in str(exc) and "no longer exists" in str(exc)
    texts = [m.get("text", "") for m in Receiver.received]
    assert any(f"{app.name} is DOWN" in t and "not healthy" in t for t in texts), texts
    assert engine.find_exact(docker_client, app.name) == []  # the unhealthy one was removed too
    assert docker_client.volumes.get(app.volume)  # the data was kept


def test_deploy_killed_mid_replace_next_run_serves_with_the_data(app: App, docker_client, blocks) -> None:
    """deploy-app in its own process, SIGKILLed as soon as the old container has stopped (its `die`
    event); the next run serves v2 with both volumes' data."""
    old = docker_client.containers.get(app.name)
    code = f"from flows.release import deploy_app; deploy_app(params={params(app, app.v2)!r})"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    events = docker_client.events(decode=True, filters={"container": old.id, "event": "die"})
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, start_new_session=True)
    killed = threading.Event()

    def kill_on_die() -> None:
        for _event in events:
            os.killpg(proc.pid, signal.SIGKILL)
            killed.set()
            return

    threading.Thread(target=kill_on_die, daemon=True).start()
    try:
        proc.wait(timeout=180)
    finally:
        events.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed.is_set() and proc.returncode == -signal.SIGKILL, proc.returncode

    state = deploy_app(params=params(app, app.v2), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    assert engine.http_ok(f"http://127.0.0.1:{app.port}/version")[0]
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []
    assert [
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": f"devops-flows.rel={app.uid}"})
    ] == [app.name]


def test_a_replace_interrupted_after_the_rename_is_picked_up(app: App, docker_client) -> None:
    """The state a run killed between the rename and the new container leaves (made here by hand, the
    kill above lands at any point): only APP-devops-previous, stopped. The next run carries its data."""
    old = docker_client.containers.get(app.name)
    old.stop()
    old.rename(containers.previous_name(app.name))
    state = deploy_app(params=params(app, app.v2), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    assert state.result().replaced == [old.id]
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []


def test_a_set_aside_container_left_after_the_new_one_started_is_discarded(app: App, docker_client) -> None:
    """The state a run killed after starting its new container leaves: APP (new, up to date) and
    APP-devops-previous. The next run leaves APP running and removes the set-aside one, volumes kept."""
    state = deploy_app(params=params(app, app.v2), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    current = state.result().container_id
    leftover = (
        docker_client.containers.create(  # the set-aside one has the same mounts (no volume of its own)
            app.v1,
            name=containers.previous_name(app.name),
            volumes=containers.carried_mounts(docker_client.containers.get(current)),
            labels={"devops-flows.rel": app.uid},
        )
    )
    again = deploy_app(params=params(app, app.v2), return_state=True).result()
    assert again.unchanged and again.container_id == current
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    assert leftover.id not in [c.id for c in docker_client.containers.list(all=True)]
