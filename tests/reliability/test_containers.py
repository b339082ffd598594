"""deploy-app keeps the app's data and configuration: real engine, real registry, real flow runs.

Containers here carry no TEST_LABEL (a parallel session ending would remove them by that label); the
fixture removes them by name. The app container is first started by hand (as Jenkins or an operator
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from blocks import slack_webhook
from flows.release import deploy_app
from tests.conftest import free_port
from tests.reliability.helpers import wait_for
from tools import containers
from tools import docker_engine as engine
from tools.errors import AppDown, DeployFailed
from tools.settings import REPO_ROOT

pytestmark = pytest.mark.reliability

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
VOLUME /anon
ARG VERSION
ENV VERSION=${VERSION}
CMD ["sh", "-c", "mkdir -p /www && echo $VERSION > /www/version && exec httpd -f -p 8080 -h /www"]
"""


@dataclass
class App:
    uid: str
    name: str
    port: int
    v1: str
    v2: str
    volume: str
    network: str


@pytest.fixture(scope="module")
def images(docker_client, sandbox_env, tmp_path_factory) -> Iterator[tuple[str, str]]:  # noqa: ANN001
    """Two versions of a tiny httpd app with a VOLUME, pushed to the sandbox registry by digest."""
    context = tmp_path_factory.mktemp("app-image")
    (context / "Dockerfile").write_text(DOCKERFILE)
    repo = f"{sandbox_env['DEVOPS_REGISTRY']}/devops-flows-rel/containers-{uuid.uuid4().hex[:8]}"
    auth = engine.RegistryAuth(
        sandbox_env["DEVOPS_REGISTRY"],
        sandbox_env["DEVOPS_REGISTRY_USER"],
        sandbox_env["DEVOPS_REGISTRY_PASSWORD"],
    )
    refs = []
    for version in ("v1", "v2"):
        engine.build_image(
            docker_client,
            context,
            "Dockerfile",
            [f"{repo}:{version}"],
            buildargs={"BASE_IMAGE": sandbox_env["DEVOPS_BASE_IMAGE"], "VERSION": version},
        )
        refs.append(f"{repo}@{engine.push(docker_client, repo, [version], auth)}")
    yield refs[0], refs[1]
    for image in docker_client.api.images():
        if any(t.startswith(repo + ":") for t in image.get("RepoTags") or []):
            try:
                docker_client.images.remove(image["Id"], force=True)
            except Exception:  # noqa: BLE001 - best effort
                pass


@pytest.fixture
def app(docker_client, images, blocks) -> Iterator[App]:  # noqa: ANN001
    """The app container, started by hand with its full configuration and data in both volumes."""
    uid = uuid.uuid4().hex[:8]
    a = App(uid, f"rel-ctr-{uid}", free_port(), *images, f"rel-ctr-data-{uid}", f"rel-ctr-net-{uid}")
    docker_client.networks.create(a.network)
    container = docker_client.containers.run(
        a.v1,
        command=["sh", "-c", "mkdir -p /www && echo by-hand > /www/version && exec httpd -f -p 8080 -h /www"],
        name=a.name,
        detach=True,
        volumes={a.volume: {"bind": "/data", "mode": "rw"}},
        network=a.network,
        mem_limit="64m",
        nano_cpus=500_000_000,
        labels={"devops-flows.rel": uid, "team": "hire"},
        restart_policy={"Name": "unless-stopped"},
        environment={"KEEP": "me"},
        ports={"8080/tcp": ("127.0.0.1", a.port)},
    )
    container.exec_run(["sh", "-c", f"echo named-{uid} > /data/note && echo anon-{uid} > /anon/note"])
    anon = [m["Name"] for m in container.attrs["Mounts"] if m["Destination"] == "/anon"]
    yield a
    for name in (a.name, containers.previous_name(a.name)):
        for c in engine.find_exact(docker_client, name):
            c.remove(force=True)
    for volume in [a.volume, *anon]:
        try:
            docker_client.volumes.get(volume).remove(force=True)
        except Exception:  # noqa: BLE001 - absent
            pass
    docker_client.networks.get(a.network).remove()


def params(a: App, reference: str, health_path: str = "/version", timeout: int = 60, **over) -> dict:  # noqa: ANN003
    values = {
        "app_name": a.name,
        "image_reference": reference,
        "ports": [{"container_port": 8080, "host_port": a.port, "host_ip": "127.0.0.1"}],
        "labels": {"devops-flows.rel": a.uid},
        "health": {
            "source": "http",
            "url": f"http://127.0.0.1:{a.port}{health_path}",
            "timeout_seconds": timeout,
        },
        "notify_block": None,
    }
    values.update(over)
    return values


def notes(docker_client, name: str) -> str:  # noqa: ANN001
    result = docker_client.containers.get(name).exec_run(["cat", "/data/note", "/anon/note"])
    return result.output.decode()


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


def test_replace_keeps_named_and_anonymous_volumes(app: App, docker_client) -> None:  # noqa: ANN001
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


def test_restore_brings_back_the_full_configuration(app: App, docker_client) -> None:  # noqa: ANN001
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

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failed_restore_is_app_down_and_notifies(app: App, docker_client) -> None:  # noqa: ANN001
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


def test_deploy_killed_mid_replace_next_run_serves_with_the_data(app: App, docker_client, blocks) -> None:  # noqa: ANN001
    """deploy-app in its own process, SIGKILLed as soon as the old container has stopped (its `die`
    event); the next run serves v2 with both volumes' data."""
    old = docker_client.containers.get(app.name)
    code = f"from flows.release import deploy_app; deploy_app(params={params(app, app.v2)!r})"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    events = docker_client.events(decode=True, filters={"container": old.id, "event": "die"})
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, start_new_session=True)  # noqa: S603
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


def test_a_replace_interrupted_after_the_rename_is_picked_up(app: App, docker_client) -> None:  # noqa: ANN001
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


def test_a_set_aside_container_left_after_the_new_one_started_is_discarded(app: App, docker_client) -> None:  # noqa: ANN001
    """The state a run killed after starting its new container leaves: APP (new, up to date) and
    APP-devops-previous. The next run leaves APP running and removes the set-aside one, volumes kept."""
    state = deploy_app(params=params(app, app.v2), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    current = state.result().container_id
    leftover = docker_client.containers.create(
        app.v1,
        name=containers.previous_name(app.name),
        volumes={app.volume: {"bind": "/data", "mode": "rw"}},
        labels={"devops-flows.rel": app.uid},
    )
    again = deploy_app(params=params(app, app.v2), return_state=True).result()
    assert again.unchanged and again.container_id == current
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    assert leftover.id not in [c.id for c in docker_client.containers.list(all=True)]
