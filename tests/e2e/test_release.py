"""The release flows end to end against the sandbox: real builder container, registry and engine.

Each test copies infra/apps/hire-help into its own work-tree; names carry a uuid; containers carry
TEST_LABEL (removed by the session) and a per-test marker label.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect_docker import DockerRegistryCredentials

from flows.release import ReleaseParams, build_app, publish_image, release
from tasks.release import BuildParams, HealthCheck, PortMapping, PublishParams
from tests.audit_events import audit_events
from tests.conftest import TEST_LABEL, free_port, read_flow_run_logs
from tests.release_form import release_form
from tools import docker_engine as engine
from tools.errors import BuildFailed, DeployFailed, PushFailed, RegistryAuthError
from tools.settings import INFRA_DIR, REPO_ROOT, load_env

pytestmark = pytest.mark.e2e
APP_SRC = INFRA_DIR / "apps" / "hire-help"


@pytest.fixture(scope="module")
def cache_volume(docker_client):
    name = f"devops-flows-test-cache-{uuid.uuid4().hex[:8]}"
    yield name
    for suffix in ("ivy2", "coursier"):
        try:
            docker_client.volumes.get(f"{name}-{suffix}").remove(force=True)
        except Exception:  # noqa: BLE001 - absent is fine
            pass


@pytest.fixture
def app(workdir: Path) -> Path:
    path = workdir / "hire-help"
    shutil.copytree(APP_SRC, path)
    return path


def set_version(app: Path, version: str) -> None:
    build = app / "build.sbt"
    build.write_text(build.read_text().replace('version := "1.0.0"', f'version := "{version}"'))


def registry_get(env: dict[str, str], path: str) -> tuple[dict, dict]:
    token = base64.b64encode(
        f"{env['DEVOPS_REGISTRY_USER']}:{env['DEVOPS_REGISTRY_PASSWORD']}".encode()
    ).decode()
    request = urllib.request.Request(
        f"http://{env['DEVOPS_REGISTRY']}{path}",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read()), dict(response.headers)


def catalog(env: dict[str, str]) -> list[str]:
    """Every repository of the registry, page by page (`last=` pagination)."""
    names: list[str] = []
    while True:
        query = "?n=100" + (f"&last={names[-1]}" if names else "")
        page = registry_get(env, f"/v2/_catalog{query}")[0].get("repositories") or []
        names += page
        if len(page) < 100:
            return names


def wait_for_body(url: str, expected: str, seconds: float = 90) -> str:
    """Poll a published port (no proxy) until the body contains `expected`; resets count as not yet."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < end:
        try:
            with opener.open(url, timeout=3) as response:
                last = response.read().decode()
                if expected in last:
                    return last
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered with {expected!r}; last: {last}")


def all_logs(flow_run_id) -> list[str]:
    """Logs of a flow run and of all its subflow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    messages = read_flow_run_logs(flow_run_id)
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
    for child in children:
        messages += read_flow_run_logs(child.id)
    return messages


def _ivy_builds(lines: list[str]) -> int:
    """The builds the stand-in builder found recorded in the ivy cache volume (`ivy cache: N build(s)`)."""
    counts = [int(m.group(1)) for line in lines if (m := re.search(r"ivy cache: (\d+) build", line))]
    assert counts, "no `ivy cache:` line in the build's logs"
    return max(counts)


def deploy_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)  # the latest


@pytest.fixture
def cleanup_images(docker_client):
    repositories: list[str] = []
    yield repositories
    for image in docker_client.api.images():  # no inspect of each: other tests remove theirs meanwhile
        if any(tag.rpartition(":")[0] in repositories for tag in image.get("RepoTags") or []):
            try:
                docker_client.images.remove(image["Id"], force=True)
            except Exception:  # noqa: BLE001 - still used by a running test container: fine
                pass


def assert_secret_nowhere(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text
    for path in engine.docker_config_paths():
        if path.exists():
            assert secret not in path.read_text(), path


def failure(state) -> BaseException:
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, BaseException), exc
    return exc


def release_params(app: Path, builder: str, cache: str, name: str, port: int, **over) -> ReleaseParams:
    values = dict(
        app_path=str(app),
        app_name=name,
        image_repository=f"devops-flows-e2e/{name}",
        environment="dev",
        builder_image=builder,
        cache_volume=cache,
        build_timeout_seconds=300,
        ports=[PortMapping(container_port=10000, host_port=port, host_ip="127.0.0.1")],
        health=HealthCheck(url=f"http://127.0.0.1:{port}/health", timeout_seconds=90),
        labels={TEST_LABEL: "1", "devops-flows.e2e": name},
        push_retries=1,
        retry_delay_seconds=0.5,
    )
    values.update(over)
    return ReleaseParams(**release_form(**values))


def test_release_replaces_the_container_and_rolls_back_an_unhealthy_one(
    app, builder_image, cache_volume, blocks, docker_client, sandbox_env, cleanup_images
):
    name = f"hire-help-e2e-{uuid.uuid4().hex[:8]}"
    cleanup_images.append(f"{sandbox_env['DEVOPS_REGISTRY']}/devops-flows-e2e/{name}")
    started = datetime.now(UTC)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    password = sandbox_env["DEVOPS_REGISTRY_PASSWORD"]

    # 1. first release: zip built in the container, image pushed, container serving 1.0.0
    state = release(release_params(app, builder_image, cache_volume, name, port), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    first = state.result()
    assert (app / "target" / "universal" / "hire-help-1.0.0.zip").is_file()
    assert (app / "hire-help-1.0.0" / "bin" / "start.sh").stat().st_mode & 0o111
    assert f"devops-flows-e2e/{name}" in catalog(sandbox_env)
    _, headers = registry_get(sandbox_env, f"/v2/devops-flows-e2e/{name}/manifests/dev")
    assert headers["Docker-Content-Digest"] == first.image.digest
    assert (
        first.image.reference
        == f"{sandbox_env['DEVOPS_REGISTRY']}/devops-flows-e2e/{name}@{first.image.digest}"
    )
    assert first.build is not None and first.inputs
    assert sorted(first.image.tags) == ["1.0.0", "dev", f"inputs-{first.inputs[:40]}"]
    assert first.health.healthy and first.health.source == "docker"
    assert "version: 1.0.0" in wait_for_body(url, "version: 1.0.0")
    running = engine.find_exact(docker_client, name)
    assert [c.id for c in running] == [first.deploy.container_id]
    attrs = running[0].attrs
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert "PROJECT_ENV=dev" in attrs["Config"]["Env"]
    assert attrs["Config"]["Labels"]["org.opencontainers.image.version"] == "1.0.0"
    logs = all_logs(state.state_details.flow_run_id)
    assert any("ivy cache:" in line for line in logs)
    assert any("mkzip:" in line for line in logs)
    assert_secret_nowhere(password, *logs)
    app_secrets = json.loads(load_env()["DEVOPS_APP_SECRETS"])  # generated by `scripts/sandbox up`
    assert_secret_nowhere(app_secrets["PROJECT_DB_PASSWORD"], *logs)
    report = deploy_artifact(f"deploy-{name}")
    assert first.image.digest in report and first.deploy.container_id[:12] in report
    assert f"127.0.0.1:{port}->10000/tcp" in report and "healthy via docker" in report

    # 1b. the same release again: the build inputs are unchanged, so build and push are skipped (the
    # registry's image re-tagged); same image and configuration, the container is left running; a changed
    # runtime environment or force_redeploy replaces it, force_build builds again (the same image)
    state = release(release_params(app, builder_image, cache_volume, name, port), return_state=True)
    again = state.result()
    assert again.build is None and again.inputs == first.inputs
    assert again.image.digest == first.image.digest and again.image.image_id == first.image.image_id
    again_logs = all_logs(state.state_details.flow_run_id)
    assert any("build skipped:" in line for line in again_logs), again_logs
    assert not any("ivy cache:" in line for line in again_logs)
    assert again.deploy.unchanged and again.deploy.replaced == []
    assert again.deploy.container_id == first.deploy.container_id and again.health.healthy
    assert any(
        "with this configuration: left running" in line for line in all_logs(state.state_details.flow_run_id)
    )
    assert "(already up to date)" in deploy_artifact(f"deploy-{name}")
    bad_health = HealthCheck(source="http", url=f"http://127.0.0.1:{port}/no-such-page", timeout_seconds=2)
    exc = failure(
        release(
            release_params(app, builder_image, cache_volume, name, port, health=bad_health), return_state=True
        )
    )
    assert isinstance(exc, DeployFailed) and "it was left running" in str(exc), repr(exc)
    assert [c.id for c in engine.find_exact(docker_client, name)] == [first.deploy.container_id]
    state = release(
        release_params(app, builder_image, cache_volume, name, port, env={"EXTRA": "1"}), return_state=True
    )
    changed = state.result()
    assert changed.deploy.replaced == [first.deploy.container_id] and not changed.deploy.unchanged
    assert any(
        "its environment differs in ['EXTRA']" in line for line in all_logs(state.state_details.flow_run_id)
    )
    assert changed.build is None
    state = release(
        release_params(
            app,
            builder_image,
            cache_volume,
            name,
            port,
            env={"EXTRA": "1"},
            force_redeploy=True,
            force_build=True,
        ),
        return_state=True,
    )
    forced = state.result()
    assert forced.deploy.replaced == [changed.deploy.container_id]
    assert forced.build is not None and forced.image.image_id == first.image.image_id, "not reproducible"
    assert _ivy_builds(all_logs(state.state_details.flow_run_id)) == _ivy_builds(logs) + 1  # only this one
    first, logs = forced, all_logs(state.state_details.flow_run_id)  # what step 2 replaces and counts on

    # 2. second release with a new version, HTTP health source: old container gone, 1.1.0 served
    set_version(app, "1.1.0")
    params = release_params(
        app,
        builder_image,
        cache_volume,
        name,
        port,
        health=HealthCheck(source="http", url=f"http://127.0.0.1:{port}/health", timeout_seconds=90),
    )
    state = release(params, return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    second = state.result()
    assert second.health.source == "http" and second.health.healthy
    assert second.deploy.replaced == [first.deploy.container_id]
    assert [c.id for c in engine.find_exact(docker_client, name)] == [second.deploy.container_id]
    assert not (app / "target" / "universal" / "hire-help-1.0.0.zip").exists()  # target/ was cleaned
    assert "version: 1.1.0" in wait_for_body(url, "version: 1.1.0")
    # the cache volume outlives the build: one more build recorded (earlier tests of the module count too)
    assert _ivy_builds(all_logs(state.state_details.flow_run_id)) == _ivy_builds(logs) + 1

    # 3. a release whose health check fails: DeployFailed with the container's log, 1.1.0 restored
    set_version(app, "1.2.0")
    (app / "src" / "universal" / "share" / "www" / "health").unlink()
    state = release(
        release_params(app, builder_image, cache_volume, name, port, health=HealthCheck(timeout_seconds=90)),
        return_state=True,
    )
    exc = failure(state)
    assert isinstance(exc, DeployFailed), repr(exc)
    assert "not healthy" in str(exc) and "unhealthy" in str(exc)
    assert any("listening on :10000" in line for line in exc.tail), exc.tail
    restored = engine.find_exact(docker_client, name)
    assert (
        len(restored) == 1
        and restored[0].attrs["Config"]["Labels"]["org.opencontainers.image.version"] == "1.1.0"
    )
    assert restored[0].status == "running"
    assert "version: 1.1.0" in wait_for_body(url, "version: 1.1.0")
    logs = all_logs(state.state_details.flow_run_id)
    assert any("rolled back" in line for line in logs)
    assert_secret_nowhere(password, str(exc), *logs)

    # the audit trail: each deploy that changed the container (not the unchanged one), then the restore
    trail = audit_events(f"devops.app.{name}", started, {"devops.app.restored"})
    events = [e["event"] for e in sorted(trail, key=lambda e: e["occurred"])]
    assert events == ["devops.app.deployed"] * 4 + ["devops.app.restored"], events
    deployed = [e["payload"] for e in trail if e["event"] == "devops.app.deployed"]
    assert {p["container_id"] for p in deployed} >= {second.deploy.container_id}
    assert all(
        p["image"].startswith(f"{sandbox_env['DEVOPS_REGISTRY']}/devops-flows-e2e/{name}@sha256:")
        for p in deployed
    )


def test_builder_failure_is_build_failed_and_nothing_is_pushed(
    app, builder_image, cache_volume, blocks, sandbox_env
):
    name = f"hire-help-e2e-{uuid.uuid4().hex[:8]}"
    params = release_params(
        app,
        builder_image,
        cache_volume,
        name,
        free_port(),
        build_command=["sh", "-c", "echo compiling; echo 'error: boom-marker' >&2; exit 3"],
    )
    exc = failure(release(params, return_state=True))
    assert isinstance(exc, BuildFailed), repr(exc)
    assert exc.exit_code == 3
    assert "error: boom-marker" in exc.tail and "compiling" in exc.tail
    assert f"devops-flows-e2e/{name}" not in catalog(sandbox_env)


def _registry_block(name: str, url: str, password: str, user: str) -> str:
    DockerRegistryCredentials(registry_url=url, username=user, password=password, reauth=True).save(
        name, overwrite=True
    )
    return name


def _built(app: Path, builder: str, cache: str) -> None:
    state = build_app(
        BuildParams(app_path=str(app), builder_image=builder, cache_volume=cache, labels={TEST_LABEL: "1"}),
        return_state=True,
    )
    assert state.is_completed(), state.result(raise_on_failure=False)


def test_wrong_registry_password_fails_once_with_an_auth_error(
    app, builder_image, cache_volume, blocks, sandbox_env
):
    _built(app, builder_image, cache_volume)
    wrong = f"wrong-{uuid.uuid4().hex}"
    block = _registry_block(
        f"e2e-wrong-{uuid.uuid4().hex[:8]}",
        sandbox_env["DEVOPS_REGISTRY"],
        wrong,
        sandbox_env["DEVOPS_REGISTRY_USER"],
    )
    repo = f"devops-flows-e2e/denied-{uuid.uuid4().hex[:8]}"
    state = publish_image(
        PublishParams(
            app_path=str(app),
            image_repository=repo,
            registry_block=block,
            push_retries=3,
            retry_delay_seconds=0.5,
        ),
        return_state=True,
    )
    exc = failure(state)
    assert isinstance(exc, RegistryAuthError), repr(exc)
    logs = read_flow_run_logs(state.state_details.flow_run_id)
    attempts = [line for line in logs if line.startswith("push attempt")]
    assert len(attempts) == 1, attempts
    assert repo not in catalog(sandbox_env)
    assert_secret_nowhere(wrong, str(exc), *logs)
    assert_secret_nowhere(sandbox_env["DEVOPS_REGISTRY_PASSWORD"], str(exc), *logs)


def test_registry_down_is_retried_then_fails_clearly(app, builder_image, cache_volume, blocks, sandbox_env):
    _built(app, builder_image, cache_volume)
    block = _registry_block(
        f"e2e-down-{uuid.uuid4().hex[:8]}",
        f"127.0.0.1:{free_port()}",
        sandbox_env["DEVOPS_REGISTRY_PASSWORD"],
        sandbox_env["DEVOPS_REGISTRY_USER"],
    )
    state = publish_image(
        PublishParams(
            app_path=str(app),
            image_repository="devops-flows-e2e/down",
            registry_block=block,
            push_retries=2,
            retry_delay_seconds=0.5,
        ),
        return_state=True,
    )
    exc = failure(state)
    assert isinstance(exc, PushFailed) and not isinstance(exc, RegistryAuthError), repr(exc)
    assert "refused" in str(exc).lower()
    logs = read_flow_run_logs(state.state_details.flow_run_id)
    attempts = [line for line in logs if line.startswith("push attempt")]
    assert len(attempts) == 3, attempts
    assert_secret_nowhere(sandbox_env["DEVOPS_REGISTRY_PASSWORD"], str(exc), *logs)


def test_cancelled_build_leaves_no_builder_container(app, builder_image, cache_volume, blocks, docker_client):
    marker = uuid.uuid4().hex
    script = textwrap.dedent(f"""
        from flows.release import build_app
        from tasks.release import BuildParams
        build_app(BuildParams(
            app_path={str(app)!r}, builder_image={builder_image!r}, cache_volume={cache_volume!r},
            build_command=["sh", "-c", "echo slow build; sleep 300"],
            labels={{{TEST_LABEL!r}: "1", "devops-flows.cancel": {marker!r}}},
        ))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    selector = {"label": f"devops-flows.cancel={marker}"}
    try:
        end = time.monotonic() + 120
        while not docker_client.containers.list(filters=selector):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < end, "the builder container never started"
            time.sleep(0.5)
        time.sleep(1)  # the follow loop is running now
        proc.send_signal(signal.SIGTERM)  # what Prefect's runner sends to the flow process on cancel
        proc.wait(timeout=90)
        output = proc.stdout.read().decode(errors="replace")
        assert "removed container" in output, output[-3000:]
        end = time.monotonic() + 60
        while docker_client.containers.list(all=True, filters=selector):
            assert time.monotonic() < end, "a builder container survived the cancel"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
