"""Registry credentials go only to their registry (issue 15.1): real engine, real registries.

A second `docker-registry` (its own htpasswd, temp storage, free port) sits behind a tiny Python proxy
that records every request's Authorization header: the daemon pulls through the proxy, so the proxy
sees exactly what the daemon sends to that registry.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest
from prefect_docker import DockerRegistryCredentials

from devenv import processes
from flows.release import deploy_app
from tests.reliability.helpers import PrivateRegistry
from tools import docker_engine as engine
from tools.errors import InvalidInput, RegistryAuthError

pytestmark = pytest.mark.reliability
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class RecordingProxy:
    """HTTP/1.1 forwarder to `upstream` that records (method, path, Authorization) of every request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[tuple[str, str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                proxy.seen.append((self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorizations(self) -> list[str]:
        return [a for _, _, a in self.seen if a]


@pytest.fixture
def second_registry() -> Iterator[PrivateRegistry]:
    registry = PrivateRegistry(user="other", password=f"other-{uuid.uuid4().hex}").start()
    yield registry
    registry.stop()


@pytest.fixture
def open_registry() -> Iterator[str]:
    """A registry without any auth (anonymous pulls allowed)."""
    root = Path(tempfile.mkdtemp(prefix="devops-rel-open-registry-"))
    port = processes.free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {os.urandom(8).hex()}\n"
    )
    pid = processes.spawn(
        [shutil.which("docker-registry") or "docker-registry", "serve", str(config)], root / "log"
    )
    processes.wait_until(
        lambda: processes.http_status(f"http://127.0.0.1:{port}/v2/") == 200, 30, "open registry"
    )
    yield f"127.0.0.1:{port}"
    processes.stop_pid(pid, "open registry", seconds=10)
    shutil.rmtree(root, ignore_errors=True)


def _push_app(docker_client, sandbox_env, registry: str, auth: engine.RegistryAuth, tmp: Path) -> str:
    """A tiny httpd image pushed straight to `registry`; returns its repository path@digest (no host);
    the local copies are removed so that the deploy really pulls."""
    (tmp / "Dockerfile").write_text(
        'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD ["httpd", "-f", "-p", "8080", "-h", "/"]\n'
    )
    path = f"scope/app-{uuid.uuid4().hex[:8]}"
    repo = f"{registry}/{path}"
    built = engine.build_image(
        docker_client,
        tmp,
        "Dockerfile",
        [f"{repo}:v1"],
        buildargs={"BASE_IMAGE": sandbox_env["DEVOPS_BASE_IMAGE"]},
    )
    digest = engine.push(docker_client, repo, ["v1"], auth)
    docker_client.images.remove(f"{repo}:v1")
    assert built.image_id
    return f"{path}@{digest}"


def _deploy(name: str, reference: str, **over) -> object:
    params = {
        "app_name": name,
        "image_reference": reference,
        "labels": {"devops-flows.rel": name},
        "health": {"source": "running", "timeout_seconds": 60},
        "notify_block": None,
    }
    params.update(over)
    return deploy_app(params=params, return_state=True)


@pytest.fixture
def cleanup(docker_client) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        for c in engine.find_exact(docker_client, name):
            c.remove(force=True)
    for image in docker_client.api.images():
        if any(name in d for d in image.get("RepoDigests") or [] for name in names):
            try:
                docker_client.images.remove(image["Id"], force=True)
            except docker.errors.APIError:
                pass  # still used by another test's container: removed with it


def test_the_first_registrys_password_never_reaches_a_second_registry(
    second_registry,
    docker_client,
    sandbox_env,
    blocks,
    tmp_path,
    cleanup,
) -> None:
    other = engine.RegistryAuth(second_registry.address, second_registry.user, second_registry.password)
    path = _push_app(docker_client, sandbox_env, second_registry.address, other, tmp_path)
    proxy = RecordingProxy(second_registry.address)
    try:
        # the sandbox's registry block (the first registry) and an image of the second: no credentials
        # are sent, and the second registry's refusal is a clear auth error
        name = f"rel-scope-{uuid.uuid4().hex[:8]}"
        cleanup.append(path.partition("@")[0])
        cleanup.append(name)
        exc = _deploy(name, f"{proxy.address}/{path}").result(raise_on_failure=False)
        assert isinstance(exc, RegistryAuthError), repr(exc)
        assert "wants credentials and none were sent" in str(exc) and proxy.address in str(exc)
        assert proxy.seen, "the daemon never reached the second registry"
        assert proxy.authorizations() == []
        first_password = sandbox_env["DEVOPS_REGISTRY_PASSWORD"]
        assert not any(first_password in repr(s) for s in proxy.seen)
        assert engine.find_exact(docker_client, name) == []

        # the recorder does see credentials: with the second registry's own block, they reach it
        block = f"rel-scope-{uuid.uuid4().hex[:8]}"
        DockerRegistryCredentials(
            username=other.username, password=other.password, registry_url=proxy.address
        ).save(block, overwrite=True)
        state = _deploy(name, f"{proxy.address}/{path}", registry_block=block)
        assert state.is_completed(), state.result(raise_on_failure=False)
        sent = {base64.b64decode(a.split()[1]).decode() for a in proxy.authorizations()}
        assert sent == {f"{other.username}:{other.password}"}
        assert not any(first_password in s for s in sent)
    finally:
        proxy.close()


def test_an_image_of_an_open_registry_is_pulled_anonymously(
    open_registry,
    docker_client,
    sandbox_env,
    blocks,
    tmp_path,
    cleanup,
) -> None:
    path = _push_app(
        docker_client,
        sandbox_env,
        open_registry,
        engine.RegistryAuth(open_registry, "nobody", "unused"),
        tmp_path,
    )
    proxy = RecordingProxy(open_registry)
    try:
        name = f"rel-scope-{uuid.uuid4().hex[:8]}"
        cleanup += [name, path.partition("@")[0]]
        state = _deploy(name, f"{proxy.address}/{path}")  # with the sandbox registry's block
        assert state.is_completed(), state.result(raise_on_failure=False)
        assert proxy.seen and proxy.authorizations() == []
    finally:
        proxy.close()


def test_a_push_to_another_registry_than_the_blocks_is_refused_before_any_call() -> None:
    """The client points at a closed port: any call would fail with a connection error, not InvalidInput."""
    client = docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.41", timeout=2)
    auth = engine.RegistryAuth("127.0.0.1:5000", "devops", "secret-pw")
    with pytest.raises(InvalidInput, match="credentials go only to their registry"):
        engine.push(client, "127.0.0.1:5001/app", ["v1"], auth)


@pytest.mark.parametrize(
    "reference, registry, same",
    [
        ("127.0.0.1:5000/app", "http://127.0.0.1:5000/", True),
        ("127.0.0.1:5000/app", "127.0.0.1:5001", False),
        ("Registry.Example.com/team/app", "https://registry.example.com:443", True),
        ("registry.example.com:443/team/app", "registry.example.com", True),
        ("registry.example.com.evil.io/app", "registry.example.com", False),
        ("team/app", "https://index.docker.io/v1/", True),
        ("docker.io/team/app", "registry-1.docker.io", True),
        ("index.docker.io/team/app", "docker.io", True),
        ("team/app", "127.0.0.1:5000", False),
        ("localhost:5000/app", "127.0.0.1:5000", False),
    ],
)
def test_credentials_are_scoped_by_normalised_host(reference: str, registry: str, same: bool) -> None:
    auth = engine.RegistryAuth(registry, "u", "scope-test-pw")
    assert (engine.auth_for(reference, auth) is auth) is same
