"""deploy-app (and the whole release) against an engine reached over tcp:// needs nothing but another
DockerHost block. The sandbox engine listens on a unix socket only, so the test puts a plain TCP
endpoint in front of it on 127.0.0.1 (a byte pump, no protocol knowledge): the SDK then speaks
HTTP over TCP to the daemon exactly as it would to a remote `tcp://` engine."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from blocks import DockerHost
from flows.release import release
from tests.e2e.test_release import (  # noqa: F401 - fixtures
    app,
    cache_volume,
    cleanup_images,
    release_params,
    wait_for_body,
)
from tests.sshd import free_port

pytestmark = pytest.mark.e2e


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def tcp_engine(sandbox_env: dict[str, str]) -> Iterator[str]:
    """tcp://127.0.0.1:PORT forwarding to the sandbox engine's unix socket."""
    unix_path = urlparse(sandbox_env["DOCKER_HOST"]).path
    if not sandbox_env["DOCKER_HOST"].startswith("unix://"):
        pytest.skip("the sandbox engine is not on a unix socket")
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(unix_path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


def test_release_to_a_tcp_engine_needs_only_another_block(
    app,  # noqa: F811
    builder_image,
    cache_volume,  # noqa: F811
    blocks,
    docker_client,
    sandbox_env,
    cleanup_images,  # noqa: F811
    tcp_engine,
):
    block = f"tcp-engine-{uuid.uuid4().hex[:8]}"
    # plaintext tcp:// must be allowed explicitly: the release sends registry credentials and app secrets
    DockerHost(base_url=tcp_engine, client_kwargs={"devops_allow_plaintext": True}).save(
        block, overwrite=True
    )
    name = f"hire-help-tcp-{uuid.uuid4().hex[:8]}"
    cleanup_images.append(f"{sandbox_env['DEVOPS_REGISTRY']}/devops-flows-e2e/{name}")
    port = free_port()

    result = release(release_params(app, builder_image, cache_volume, name, port, docker_host_block=block))

    assert "1.0.0" in wait_for_body(f"http://127.0.0.1:{port}/", "1.0.0")
    container = docker_client.containers.get(name)
    assert container.id == result.deploy.container_id
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
