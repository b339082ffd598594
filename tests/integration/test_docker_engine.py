"""tools.docker_engine against the sandbox's real engine and its real htpasswd registry."""

from __future__ import annotations

import base64
import json
import os
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_LABEL, free_port
from tools import docker_engine as engine
from tools.errors import ImageBuildFailed, ProcessTimeout, PushFailed, RegistryAuthError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(docker_client):
    return docker_client


@pytest.fixture(scope="module")
def registry(sandbox_env) -> dict[str, str]:
    return {
        "url": sandbox_env["DEVOPS_REGISTRY"],
        "user": sandbox_env["DEVOPS_REGISTRY_USER"],
        "password": sandbox_env["DEVOPS_REGISTRY_PASSWORD"],
    }


def _context(tmp: Path, base: str, body: str) -> Path:
    (tmp / "Dockerfile").write_text(f"ARG BASE_IMAGE={base}\nFROM ${{BASE_IMAGE}}\n{body}\n")
    return tmp


def registry_manifest_digest(registry: dict[str, str], name: str, tag: str) -> str | None:
    """Docker-Content-Digest of a manifest, read with basic auth and no proxy."""
    token = base64.b64encode(f"{registry['user']}:{registry['password']}".encode()).decode()
    request = urllib.request.Request(
        f"http://{registry['url']}/v2/{name}/manifests/{tag}",
        method="GET",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.headers.get("Docker-Content-Digest")


def assert_no_docker_config_holds(secret: str) -> None:
    for path in engine.docker_config_paths():
        if path.exists():
            assert secret not in path.read_text(), f"{path} holds the registry password"


def test_build_login_push_digest_matches_registry(client, registry, sandbox_env, tmp_path):
    name = f"devops-flows-it/probe-{uuid.uuid4().hex[:8]}"
    repository = f"{registry['url']}/{name}"
    context = _context(tmp_path, sandbox_env["DEVOPS_BASE_IMAGE"], f"RUN echo {uuid.uuid4().hex} > /marker")
    lines: list[str] = []

    class Capture:
        def info(self, msg, *args):
            lines.append(msg % args if args else msg)

        warning = info

    built = engine.build_image(
        client,
        context,
        "Dockerfile",
        [f"{repository}:1.0.0", f"{repository}:dev"],
        labels={"org.opencontainers.image.version": "1.0.0"},
        logger=Capture(),
    )
    assert any("Step 2/2" in line or "RUN echo" in line for line in lines), lines[-10:]
    image = client.images.get(f"{repository}:dev")
    assert image.id == built.image_id
    assert image.labels["org.opencontainers.image.version"] == "1.0.0"

    auth = engine.RegistryAuth(registry["url"], registry["user"], registry["password"])
    engine.login(client, auth)
    digest = engine.push(client, repository, ["1.0.0", "dev"], auth, logger=Capture())
    assert digest.startswith("sha256:")
    assert registry_manifest_digest(registry, name, "1.0.0") == digest
    assert registry_manifest_digest(registry, name, "dev") == digest
    assert not any(registry["password"] in line for line in lines)
    assert_no_docker_config_holds(registry["password"])
    client.images.remove(built.image_id, force=True)


def test_wrong_password_is_an_auth_error_without_the_password(client, registry):
    wrong = f"wrong-{uuid.uuid4().hex}"
    auth = engine.RegistryAuth(registry["url"], registry["user"], wrong)
    with pytest.raises(RegistryAuthError) as caught:
        engine.login(client, auth)
    text = str(caught.value)
    assert "credentials" in text
    assert wrong not in text and registry["password"] not in text
    assert not caught.value.transient
    assert_no_docker_config_holds(wrong)


def test_push_with_a_wrong_password_is_an_auth_error(client, registry, sandbox_env):
    repository = f"{registry['url']}/devops-flows-it/denied-{uuid.uuid4().hex[:8]}"
    client.images.get(sandbox_env["DEVOPS_BASE_IMAGE"]).tag(repository, "1")
    wrong = f"wrong-{uuid.uuid4().hex}"
    try:
        with pytest.raises(RegistryAuthError) as caught:
            engine.push(
                client, repository, ["1"], engine.RegistryAuth(registry["url"], registry["user"], wrong)
            )
        assert wrong not in str(caught.value)
    finally:
        client.images.remove(f"{repository}:1")


def test_registry_down_is_a_transient_push_failure(client, registry):
    auth = engine.RegistryAuth(f"127.0.0.1:{free_port()}", registry["user"], registry["password"])
    with pytest.raises(PushFailed) as caught:
        engine.login(client, auth)
    assert not isinstance(caught.value, RegistryAuthError)
    assert caught.value.transient, str(caught.value)
    assert "refused" in str(caught.value).lower()
    assert registry["password"] not in str(caught.value)


def test_failed_docker_build_carries_the_daemon_message(client, sandbox_env, tmp_path):
    context = _context(tmp_path, sandbox_env["DEVOPS_BASE_IMAGE"], "RUN echo broken-step-marker && exit 7")
    with pytest.raises(ImageBuildFailed) as caught:
        engine.build_image(client, context, "Dockerfile", [f"devops-flows-it/broken:{uuid.uuid4().hex[:8]}"])
    text = str(caught.value)
    assert "broken-step-marker" in text and "7" in text


def test_job_container_streams_logs_returns_exit_code_and_is_removed(client, sandbox_env):
    label = {TEST_LABEL: "1", "devops-flows.it": uuid.uuid4().hex}
    seen: list[str] = []

    class Capture:
        def info(self, msg, *args):
            seen.append(msg % args if args else msg)

        warning = info

    spec = engine.ContainerRun(
        image=sandbox_env["DEVOPS_BASE_IMAGE"],
        command=["sh", "-c", 'echo first-line; echo "secret is $TOKEN"; exit 3'],
        environment={"TOKEN": "tok-" + uuid.uuid4().hex},
        secret_names=["TOKEN"],
        labels=label,
    )
    result = engine.run_to_completion(client, spec, timeout=120, logger=Capture())
    assert result.exit_code == 3
    assert "first-line" in result.tail
    assert "secret is ***" in result.tail
    assert not any(spec.environment["TOKEN"] in line for line in seen)
    assert (
        client.containers.list(all=True, filters={"label": f"devops-flows.it={label['devops-flows.it']}"})
        == []
    )


def test_job_container_deadline_stops_and_removes_it(client, sandbox_env):
    marker = uuid.uuid4().hex
    spec = engine.ContainerRun(
        image=sandbox_env["DEVOPS_BASE_IMAGE"],
        command=["sleep", "300"],
        labels={TEST_LABEL: "1", "devops-flows.it": marker},
    )
    with pytest.raises(ProcessTimeout):
        engine.run_to_completion(client, spec, timeout=3)
    assert client.containers.list(all=True, filters={"label": f"devops-flows.it={marker}"}) == []


def test_http_probe_treats_refusal_as_not_healthy():
    ok, detail = engine.http_ok(f"http://127.0.0.1:{free_port()}/health", timeout=2)
    assert not ok and ("refused" in detail.lower() or "error" in detail.lower())


def test_login_writes_no_docker_config(client, registry, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    engine.login(client, engine.RegistryAuth(registry["url"], registry["user"], registry["password"]))
    written = [p for p in (home / ".docker", tmp_path / "dockercfg") if p.exists()]
    assert written == [], f"login wrote {written}"
    for path in engine.docker_config_paths():
        assert not path.exists() or registry["password"] not in path.read_text()
    assert json.dumps(os.environ.get("DOCKER_AUTH_CONFIG", "")).find(registry["password"]) == -1
