"""Shared fixtures: the sandbox's endpoints, one real Prefect server per test session, the blocks.

Real-tool tests label what they create with TEST_LABEL and the session removes it by label at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port
from tools.settings import REPO_ROOT, apply_env, load_env

# One label key per pytest process (an xdist worker has its own) and per scripts/test session, so a session
# that ends removes only what it created, never the containers of a session still running next to it, and
# tests/leftovers.py finds what the session failed to remove.
TEST_LABEL = (
    "devops-flows.test"
    + (f".{os.environ['DEVOPS_TEST_SESSION']}" if os.environ.get("DEVOPS_TEST_SESSION") else "")
    + (f".{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else "")
)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests write inventories and playbooks to scratch dirs under the temp dir: an allowed Ansible root.
os.environ.setdefault("DEVOPS_ANSIBLE_ROOTS", tempfile.gettempdir())
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")


# A shell started without job control (`cmd &` in a script) runs its background jobs with SIGINT ignored,
# and ignored signals are inherited: every child would ignore SIGINT and the SIGINT-first stop of our
# process runner could not be tested. A handler set here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Prefect reads its settings when first imported (its log worker thread too): point it at the session's
# server before any test module imports prefect. The server itself starts lazily (`prefect_server`).
_PREFECT_PORT = free_port()
_PREFECT_HOME = tempfile.mkdtemp(prefix="devops-flows-prefect-")
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_PREFECT_PORT}/api"
os.environ["PREFECT_HOME"] = _PREFECT_HOME


def pytest_configure(config: pytest.Config) -> None:
    from tests.reliability import figures

    figures.register(config)  # the reliability figures in the summary of any run of catalogue tests


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)  # the session's Prefect home and server database


# The longest files first (minutes each in CI), so two xdist workers (--dist loadfile: a file per worker at
# a time) end together instead of one finishing a long file alone; the rest keep their collection order.
LONGEST_FIRST = (
    "tests/reliability/test_rollout_kill_points_cancel.py",
    "tests/reliability/test_rollout_kill_points_sigkill.py",
    "tests/reliability/test_faults.py",
    "tests/e2e/test_scale_out.py",
    "tests/reliability/test_dead_runs.py",
    "tests/reliability/test_dead_run_terraform.py",
    "tests/e2e/test_rollout.py",
    "tests/e2e/test_worker_image.py",
    "tests/test_bench_quick.py",
    "tests/e2e/test_approval.py",
    "tests/integration/test_terraform.py",
    "tests/reliability/test_secret_hygiene.py",
    "tests/e2e/test_release.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def sandbox_env() -> dict[str, str]:
    """The sandbox's endpoints and credentials, exported to this process."""
    env = load_env()
    if not env:
        pytest.fail("the sandbox is not up: run scripts/sandbox up (scripts/test does it)")
    apply_env(env, override=True)
    return env


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real `prefect server start` (SQLite, with its UI) for the whole test session; yields the API URL."""
    from devenv import services
    from tools.errors import ToolError

    home = Path(_PREFECT_HOME)
    api = os.environ["PREFECT_API_URL"]
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": api}
    try:
        pid = services.start_prefect_server(_PREFECT_PORT, home / "server.log", env=env, seconds=90)
    except ToolError as exc:
        pytest.fail("prefect server did not start:\n" + "\n".join(exc.tail))
    yield api
    _flush_prefect_logs()
    services.stop_pid(pid, "prefect server", seconds=20)


def _flush_prefect_logs() -> None:
    try:
        from prefect.logging.handlers import APILogHandler

        APILogHandler.flush()
    except Exception:  # noqa: BLE001 - best effort at teardown
        pass


@pytest.fixture(scope="session")
def blocks(prefect_server: str, sandbox_env: dict[str, str]) -> list[str]:
    """The block documents, bootstrapped from the sandbox on the test server."""
    from blocks.bootstrap import bootstrap

    return bootstrap()


@pytest.fixture(scope="session")
def docker_client(sandbox_env: dict[str, str]) -> Iterator[Any]:
    import docker

    client = docker.DockerClient(base_url=sandbox_env["DOCKER_HOST"], timeout=300)
    yield client
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        container.remove(force=True)
    client.close()


BUILDER_IMAGE = "devops-flows/sbt-builder:test"


@pytest.fixture(scope="session")
def builder_image(docker_client: Any, sandbox_env: dict[str, str]) -> str:
    """The stand-in sbt builder (busybox + mkzip), built once per session from infra/apps/builder."""
    from tools import docker_engine as engine
    from tools.settings import INFRA_DIR

    engine.build_image(
        docker_client,
        INFRA_DIR / "apps" / "builder",
        "Dockerfile",
        [BUILDER_IMAGE],
        buildargs={"BASE_IMAGE": sandbox_env["DEVOPS_BASE_IMAGE"]},
    )
    return BUILDER_IMAGE


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory outside the repository."""
    path = Path(tempfile.mkdtemp(prefix="devops-flows-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def read_flow_run_logs(flow_run_id: Any, settle: float = 10.0) -> list[str]:
    """Every log message of a flow run (and its task runs), read back from the API.

    Logs reach the API in batches: flush ours first, then read until two reads agree."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    _flush_prefect_logs()
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    deadline = time.monotonic() + settle
    previous: list[str] | None = None
    while True:
        messages: list[str] = []
        with get_client(sync_client=True) as client:
            while True:
                page = client.read_logs(
                    log_filter=log_filter, limit=200, offset=len(messages), sort=LogSort.TIMESTAMP_ASC
                )
                messages += [log.message for log in page]
                if len(page) < 200:
                    break
        if (messages and messages == previous) or time.monotonic() > deadline:
            return messages
        previous = messages
        time.sleep(0.5)


REPO = REPO_ROOT
