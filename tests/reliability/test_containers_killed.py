"""Issue 14, deploy-app: a replace stopped between `docker create` and `docker start` of the new container
(the proxy in front of the engine, slow_docker.py, holds the start) loses nothing.

The run is SIGKILLed (the worker host is lost) or cancelled through the Prefect API (its runner SIGTERMs
the flow process); the held start is then dropped, never reaching the engine. What is left: the app's
previous container set aside (stopped, renamed, its image pinned) and the new one created, never started,
under the app's name. The next deploy-app, run normally, must serve with both volumes' data, keep the
pin on the image that served, and leave no other container of the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from prefect_docker import DockerHost

from flows.release import deploy_app
from tests.integration.flows_for_tests import served_run
from tests.reliability.apps import App, notes, params
from tests.reliability.helpers import wait_for
from tests.reliability.slow_docker import SlowDocker
from tools import containers
from tools import docker_engine as engine
from tools.http_check import http_ok
from tools.settings import REPO_ROOT

pytestmark = pytest.mark.reliability
START = "POST /containers/*/start"


@contextmanager
def start_held(app: App, docker_client, sandbox_env: dict[str, str]) -> Iterator[tuple[str, Callable]]:
    """A DockerHost block through the proxy, the new container's start held; yields the block's name and
    a wait for the held start (returns the never-started container). The start is dropped at the end."""
    with SlowDocker(sandbox_env["DOCKER_HOST"]) as proxy:
        block = f"rel-ctr-slow-{app.uid}"
        DockerHost(base_url=proxy.base_url).save(block, overwrite=True)
        seen = proxy.hold(START)

        def held(running: Callable[[], object]) -> object:
            def at_start() -> bool:
                assert running(), "the run ended before the new container's start"
                return seen.is_set()

            wait_for(at_start, 150, "the new container's start to be held", interval=0.1)
            created = engine.find_exact(docker_client, app.name)
            assert len(created) == 1 and created[0].status == "created", created
            assert created[0].id in proxy.held[START][0], proxy.held[START]
            return created[0]

        yield block, held


def interrupted_state(app: App, docker_client, new) -> str:
    """What the stopped run left: the never-started new container and the stopped, set-aside previous one."""
    current = engine.find_exact(docker_client, app.name)
    aside = engine.find_exact(docker_client, containers.previous_name(app.name))
    assert [c.id for c in current] == [new.id] and current[0].status == "created", current
    assert current[0].attrs["State"]["StartedAt"].startswith("0001-"), current[0].attrs["State"]
    assert len(aside) == 1 and aside[0].status == "exited", aside
    return aside[0].id


def next_run_serves(app: App, docker_client, served_id: str, served_image: str) -> None:
    """The next deploy-app (normal engine block) serves v2 with the data, pin and containers as they must."""
    state = deploy_app(params=params(app, app.v2), return_state=True)
    assert state.is_completed(), state.result(raise_on_failure=False)
    result = state.result()
    assert result.replaced == [served_id], (result.replaced, served_id)  # what served, not the never-started
    ok, detail = http_ok(f"http://127.0.0.1:{app.port}/version")
    assert ok, detail
    assert notes(docker_client, app.name) == f"named-{app.uid}\nanon-{app.uid}\n"
    now = docker_client.containers.get(app.name)
    assert now.id == result.container_id and now.status == "running"
    pinned = docker_client.images.get(f"{app.v1.partition('@')[0]}:{containers.pin_tag(app.name)}")
    assert pinned.id == served_image, "the pin moved off the image that served"
    of_test = docker_client.containers.list(all=True, filters={"label": f"devops-flows.rel={app.uid}"})
    assert [c.id for c in of_test] == [now.id], [(c.name, c.status) for c in of_test]
    assert engine.find_exact(docker_client, containers.previous_name(app.name)) == []


def test_deploy_sigkilled_between_create_and_start_next_run_serves_with_the_data(
    app: App,
    docker_client,
    blocks,
    sandbox_env: dict[str, str],
) -> None:
    served = docker_client.containers.get(app.name)
    with start_held(app, docker_client, sandbox_env) as (block, held):
        run = params(app, app.v2, docker_host_block=block)
        code = f"from flows.release import deploy_app; deploy_app(params={run!r})"
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        try:
            new = held(lambda: proc.poll() is None)
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    assert interrupted_state(app, docker_client, new) == served.id
    next_run_serves(app, docker_client, served.id, served.attrs["Image"])


def test_deploy_cancelled_between_create_and_start_next_run_serves_with_the_data(
    app: App,
    docker_client,
    blocks,
    sandbox_env: dict[str, str],
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    served = docker_client.containers.get(app.name)
    with start_held(app, docker_client, sandbox_env) as (block, held):
        parameters = {"params": params(app, app.v2, docker_host_block=block)}
        with (
            served_run("deploy-app", mode="deploy", parameters=parameters) as run,
            get_client(sync_client=True) as client,
        ):

            def running() -> bool:
                state = client.read_flow_run(run.id).state
                assert state is None or not state.is_final(), f"the run ended: {state}"
                return True

            new = held(running)
            client.set_flow_run_state(run.id, Cancelling(), force=True)

            def cancelled() -> bool:
                state = client.read_flow_run(run.id).state
                return bool(state and state.type == StateType.CANCELLED)

            wait_for(cancelled, 120, "the run to be cancelled", interval=0.5)
    assert interrupted_state(app, docker_client, new) == served.id
    next_run_serves(app, docker_client, served.id, served.attrs["Image"])


def test_set_aside_removes_a_never_started_container_and_brings_back_the_one_that_served(
    app: App,
    docker_client,
) -> None:
    """tools.containers.set_aside on the state a run stopped before its start leaves (made by hand)."""
    served = docker_client.containers.get(app.name)
    served.stop()
    served.rename(containers.previous_name(app.name))
    # created as deploy-app creates it: with the set-aside container's mounts (so no volume of its own)
    never = docker_client.containers.create(
        app.v2, name=app.name, volumes=containers.carried_mounts(served), labels={"devops-flows.rel": app.uid}
    )
    aside = containers.set_aside(docker_client, app.name)
    assert aside.recovered and aside.previous_id == served.id
    assert never.id not in [c.id for c in docker_client.containers.list(all=True)]
    assert [c.id for c in engine.find_exact(docker_client, containers.previous_name(app.name))] == [served.id]
    assert engine.find_exact(docker_client, app.name) == []
    assert aside.pinned and docker_client.images.get(aside.pinned).id == served.attrs["Image"]
    assert {m["bind"] for m in aside.mounts.values()} == {"/data", "/anon"}
    assert docker_client.volumes.get(app.volume)
