"""`prefect --no-prompt deploy --all` against a real server: every deployment reads back exactly as
prefect.yaml declares it (names, entrypoints, crons, timezones, parameters, concurrency), and a
deployment run by a real process worker completes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from deployments.declarations import load
from deployments.setup import ensure_work_pools
from tests.conftest import REPO


@pytest.fixture(scope="module")
def deployed(prefect_server: str, blocks: list[str]) -> dict:
    ensure_work_pools()
    out = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    return {d.name: (d, flows[d.flow_id]) for d in deployments}


def test_every_declared_deployment_reads_back_as_declared(deployed: dict) -> None:
    for decl in load().deployments:
        assert decl.name in deployed, f"{decl.name} was not deployed"
        dep, _flow_name = deployed[decl.name]
        assert dep.entrypoint == decl.entrypoint
        assert dep.work_pool_name == decl.work_pool.name
        assert dep.parameters == decl.parameters
        assert dep.enforce_parameter_schema is True
        assert sorted(dep.tags) == sorted(decl.tags)
        crons = sorted((s.schedule.cron, s.schedule.timezone) for s in dep.schedules)
        assert crons == sorted((s.cron, s.timezone) for s in decl.schedules)
        if decl.concurrency_limit:
            assert (
                dep.global_concurrency_limit is not None
                and dep.global_concurrency_limit.limit == decl.concurrency_limit.limit
            )
            assert (
                dep.concurrency_options.collision_strategy.value == decl.concurrency_limit.collision_strategy
            )
        else:
            assert dep.global_concurrency_limit is None


def test_parameter_forms_are_typed(deployed: dict) -> None:
    """No bare `object` without properties: the UI renders a real form for every parameter."""
    for name, (dep, _flow) in deployed.items():
        schema = dep.parameter_openapi_schema
        defs = schema.get("definitions", {}) | schema.get("$defs", {})
        for pname, prop in schema.get("properties", {}).items():
            target = prop
            ref = prop.get("$ref") or (prop.get("allOf") or [{}])[0].get("$ref")
            if ref:
                target = defs[ref.rsplit("/", 1)[-1]]
            if target.get("type") == "object":
                assert target.get("properties") or target.get("additionalProperties"), (
                    f"{name}.{pname} is an untyped object"
                )
            assert prop.get("description") or target.get("description") or prop.get("title"), (
                f"{name}.{pname}"
            )


@pytest.fixture(scope="module")
def worker_run(deployed: dict):
    """prune-images (a dry run by default) picked up and run by a real process worker."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = run_deployment("prune-images/prune-images", timeout=0)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "devops-process",
            "--run-once",
            "--type",
            "process",
        ],
        cwd=REPO,
        env=os.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 240
        with get_client(sync_client=True) as client:
            while time.monotonic() < end:
                state = client.read_flow_run(run.id).state
                if state and state.is_final():
                    break
                time.sleep(1)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 15)
        worker.wait(timeout=30)
    return run, state


def test_a_deployment_run_by_a_real_worker_completes(worker_run) -> None:
    _run, state = worker_run
    assert state is not None and state.is_completed(), state


CHROMIUM = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=30000",
    "--window-size=1400,1000",
]


def render(url: str, profile: str, screenshot: str) -> str:
    """The page as the browser rendered it (after the UI's JavaScript ran), plus a screenshot."""
    base = [*CHROMIUM, f"--user-data-dir={profile}"]
    subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    out = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return out.stdout


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is installed by scripts/setup")
def test_ui_renders_deployments_and_an_artifact(prefect_server: str, worker_run, tmp_path) -> None:
    """Headless Chromium against the real UI: the deployments page lists ours; an artifact renders."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tools.settings import state_dir

    run, _state = worker_run
    ui = prefect_server.removesuffix("/api")
    shots = state_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    names = [decl.name for decl in load().deployments]
    page = render(f"{ui}/deployments", str(tmp_path / "chromium"), str(shots / "deployments.png"))
    assert any(name in page for name in names), "none of our deployments is on the rendered list page"
    # The list is paginated and other tests of this session may have added deployments to the same
    # server, so a deployment missing from the first page must render on its own page instead.
    with get_client(sync_client=True) as client:
        ids = {d.name: d.id for d in client.read_deployments() if d.name in names}
    for name in (n for n in names if n not in page):
        assert name in ids, f"{name} is not deployed"
        for _attempt in range(3):  # under load the UI's API calls may outlast one render's time budget
            own = render(
                f"{ui}/deployments/deployment/{ids[name]}", str(tmp_path / "chromium"), str(shots / "d.png")
            )
            if name in own:
                break
        assert name in own, f"{name} renders neither on the deployments page nor on its own page"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert artifacts, "the worker's run produced no artifact"
    artifact = artifacts[0]
    wanted = _key_text(artifact.data) or artifact.key
    for _attempt in range(3):
        page = render(
            f"{ui}/artifacts/artifact/{artifact.id}", str(tmp_path / "chromium"), str(shots / "artifact.png")
        )
        if wanted in page:
            break
    assert wanted in page


def _key_text(data: object) -> str:
    """A value a person would look for on the artifact's page: a table's first cell, or a heading."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return next(
                line.strip("#|- ").split("|")[0].strip() for line in data.splitlines() if line.strip("#|- ")
            )
    if isinstance(data, list) and data:
        first = data[0]
        return str(next(iter(first.values())) if isinstance(first, dict) else first[0])
    return ""  # an empty table: its key is what the page shows
