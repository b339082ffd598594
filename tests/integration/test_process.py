"""The process runner against real processes and a real Prefect server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prefect import flow, task

from tests.conftest import read_flow_run_logs
from tests.integration.flows_for_tests import TREE_SCRIPT, served_run
from tools import process
from tools.errors import ProcessTimeout, ToolError
from tools.process import group_alive
from tools.stopping import escalating

SECRET = "s3cr3t p@ss w0rd$'\"\\*"


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(path: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


@task
def echo_lines() -> int:
    return process.run(["sh", "-c", "for i in 1 2 3; do echo line-$i; done; echo to-stderr >&2"]).exit_code


@flow
def echo_flow() -> int:
    return echo_lines()


@task
def leak_attempt() -> None:
    process.run(
        ["sh", "-c", 'echo "token is $TOKEN"; echo "stderr $TOKEN" >&2; sleep 0.5; exit 3'],
        secret_env={"TOKEN": SECRET},
    )


@flow
def leak_flow() -> None:
    leak_attempt()


def test_output_streams_into_the_flow_run_logs(prefect_server: str) -> None:
    state = echo_flow(return_state=True)
    assert state.result() == 0
    logs = read_flow_run_logs(state.state_details.flow_run_id)
    for expected in ("line-1", "line-2", "line-3", "to-stderr"):
        assert any(expected in m for m in logs), f"{expected} not in {logs}"
    assert any(m.startswith("$ sh -c") for m in logs)


def test_a_secret_never_reaches_logs_argv_or_error(prefect_server: str) -> None:
    state = leak_flow(return_state=True)
    assert state.is_failed()
    with pytest.raises(ToolError) as info:
        state.result()
    error = info.value
    assert error.exit_code == 3
    assert SECRET not in str(error) and SECRET not in repr(error.argv)
    assert "token is ***" in error.tail
    logs = read_flow_run_logs(state.state_details.flow_run_id)
    assert any("token is ***" in m for m in logs)
    assert not [m for m in logs if SECRET in m]


def test_secret_is_in_no_process_argv_while_it_runs(tmp_path: Path) -> None:
    seen: list[str] = []

    def sample(stream: str, line: str) -> None:
        if line == "ready":
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        seen.append((entry / "cmdline").read_bytes().decode(errors="replace"))
                    except OSError:
                        pass

    process.run(
        ["sh", "-c", 'echo ready; sleep 0.3; test -n "$TOKEN"'], secret_env={"TOKEN": SECRET}, on_line=sample
    )
    assert seen and not [c for c in seen if SECRET in c]


def test_timeout_stops_the_whole_tree_sigint_first(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ProcessTimeout) as info:
        process.run(["sh", "-c", TREE_SCRIPT, "sh", str(tmp_path)], timeout=2, stop=escalating(2, 2))
    assert "did not finish within 2s" in str(info.value)
    parent = int((tmp_path / "parent.pid").read_text())
    child = int((tmp_path / "child.pid").read_text())
    assert (tmp_path / "parent-got-sigint").exists(), "SIGINT did not reach the parent first"
    assert not pid_alive(parent) and not pid_alive(child)
    assert not group_alive(parent)
    assert time.monotonic() - started < 20


def test_missing_executable_is_a_clear_error() -> None:
    with pytest.raises(ToolError, match="no-such-tool-xyz is not installed"):
        process.run(["no-such-tool-xyz", "--version"])


@pytest.mark.parametrize(
    ("flow_name", "mode"), [("process-tree", "tree"), ("process-tree-submitted", "submitted")]
)
def test_prefect_cancel_of_a_served_flow_run_leaves_no_process(
    prefect_server: str, tmp_path: Path, flow_name: str, mode: str
) -> None:
    """Cancel through the API; Prefect's runner SIGTERMs the flow process; our runner stops the tool
    (SIGINT first) and reaps the tree, whether the task ran inline or was submitted to a pool thread."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    with served_run(flow_name, mode, parameters={"marker_dir": str(tmp_path)}) as run:
        wait_for(tmp_path / "child.pid", 120)
        parent = int((tmp_path / "parent.pid").read_text())
        child = int((tmp_path / "child.pid").read_text())
        assert pid_alive(child)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
            end = time.monotonic() + 90
            while time.monotonic() < end:
                state = client.read_flow_run(run.id).state
                if state and state.type == StateType.CANCELLED and not pid_alive(child):
                    break
                time.sleep(0.5)
            assert state is not None and state.type == StateType.CANCELLED, state
        end = time.monotonic() + 20
        while time.monotonic() < end and (pid_alive(parent) or pid_alive(child)):
            time.sleep(0.2)
        assert not pid_alive(parent) and not pid_alive(child), "the process tree outlived the cancel"
        assert (tmp_path / "parent-got-sigint").exists(), "the tool was not sent SIGINT first"


def test_a_failing_line_handler_does_not_stop_the_following() -> None:
    """A caller's handler that raises (e.g. a refused progress update) is logged once; every later line,
    like Packer's artifact line at the end, still reaches the caller and the tail."""
    seen: list[str] = []

    def handler(stream: str, line: str) -> None:
        seen.append(line)
        if line.startswith("progress"):
            raise RuntimeError("artifact update refused")

    result = process.run(
        ["sh", "-c", "echo progress 1; echo progress 2; echo artifact,ami-1"], on_line=handler
    )
    assert seen == ["progress 1", "progress 2", "artifact,ami-1"]
    assert result.tail[-1] == "artifact,ami-1"
