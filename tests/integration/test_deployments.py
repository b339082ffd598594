"""`prefect --no-prompt deploy --all` against a real server: every deployment reads back exactly as
prefect.yaml declares it (names, entrypoints, crons, timezones, parameters, concurrency), and a
deployment run by a real process worker completes."""

from __future__ import annotations

import os
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
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
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
            assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == decl.concurrency_limit.limit
            assert dep.concurrency_options.collision_strategy.value == decl.concurrency_limit.collision_strategy
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
                assert target.get("properties") or target.get("additionalProperties"), f"{name}.{pname} is an untyped object"
            assert prop.get("description") or target.get("description") or prop.get("title"), f"{name}.{pname}"


def test_a_deployment_run_by_a_real_worker_completes(deployed: dict) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    run = run_deployment("prune-images/prune-images", timeout=0)
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "devops-process", "--run-once", "--type", "process"],
        cwd=REPO, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        end = time.monotonic() + 240
        with get_client(sync_client=True) as client:
            while time.monotonic() < end:
                state = client.read_flow_run(run.id).state
                if state and state.is_final():
                    break
                time.sleep(1)
        assert state is not None and state.is_completed(), state
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 15)
        worker.wait(timeout=30)
