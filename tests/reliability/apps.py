"""The app of the container reliability tests: two versions of a tiny httpd image with a VOLUME, and its
container started by hand with its full configuration and data in a named and an anonymous volume.

Containers here carry no TEST_LABEL (a parallel session ending would remove them by that label); the
fixture removes them by name. tests/reliability/conftest.py makes the fixtures `app` and `images`
available to the suite.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import free_port
from tools import containers
from tools import docker_engine as engine

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
VOLUME /anon
ARG VERSION
ARG SET
ENV VERSION=${VERSION}
LABEL devops-flows.rel.images=${SET}
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
def images(docker_client, sandbox_env, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """Two versions of a tiny httpd app with a VOLUME, pushed to the sandbox registry by digest. Each
    module gets images of its own (a label with its set's id): removing them by id at the end never takes
    another module's tags with them."""
    context = tmp_path_factory.mktemp("app-image")
    (context / "Dockerfile").write_text(DOCKERFILE)
    uid = uuid.uuid4().hex[:8]
    repo = f"{sandbox_env['DEVOPS_REGISTRY']}/devops-flows-rel/containers-{uid}"
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
            buildargs={"BASE_IMAGE": sandbox_env["DEVOPS_BASE_IMAGE"], "VERSION": version, "SET": uid},
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
def app(docker_client, images, blocks) -> Iterator[App]:
    """The app container, started by hand with its full configuration and data in both volumes. Removed
    at the end with every container of the test (by name and label), their volumes and the network, also
    when the set-up itself failed."""
    uid = uuid.uuid4().hex[:8]
    a = App(uid, f"rel-ctr-{uid}", free_port(), *images, f"rel-ctr-data-{uid}", f"rel-ctr-net-{uid}")
    docker_client.networks.create(a.network)
    volumes = {a.volume}
    try:
        container = docker_client.containers.run(
            a.v1,
            command=[
                "sh",
                "-c",
                "mkdir -p /www && echo by-hand > /www/version && exec httpd -f -p 8080 -h /www",
            ],
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
        volumes |= {m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"}
        yield a
    finally:
        _remove_app(docker_client, a, volumes)


def _remove_app(docker_client, a: App, volumes: set[str]) -> None:
    found = docker_client.containers.list(all=True, filters={"label": f"devops-flows.rel={a.uid}"})
    for name in (a.name, containers.previous_name(a.name)):
        found += engine.find_exact(docker_client, name)
    for c in {c.id: c for c in found}.values():
        volumes |= {m["Name"] for m in c.attrs.get("Mounts") or [] if m.get("Type") == "volume"}
        c.remove(force=True)
    for volume in volumes:
        try:
            docker_client.volumes.get(volume).remove(force=True)
        except Exception:  # noqa: BLE001 - absent
            pass
    docker_client.networks.get(a.network).remove()


def params(a: App, reference: str, health_path: str = "/version", timeout: int = 60, **over) -> dict:
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


def notes(docker_client, name: str) -> str:
    result = docker_client.containers.get(name).exec_run(["cat", "/data/note", "/anon/note"])
    return result.output.decode()
