"""tasks/terraform_context.py: the workspace prepared and initialised ahead (while a bake runs) is the one the
next init of the same stack uses; another init, or a failed preparation, gets a fresh init; nothing is
left behind, also when the preparation is abandoned half-way; the sweep of dead runs leaves it alone."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from blocks import AWS_BLOCK, resolve
from tasks.terraform_context import init_ahead, init_workspace, settle_ahead, state_key
from tests.blocks import save_backend
from tools import terraform as tf
from tools.terraform_lock import live_terraform_processes
from tools.terraform_workspace import WORKSPACE_PREFIX

pytestmark = pytest.mark.integration
STACK = "scalac/internal-prod/xwiki"


@pytest.fixture
def backend_block(blocks, sandbox_env) -> str:
    name = f"tf-backend-ahead-{uuid.uuid4().hex[:8]}"
    return save_backend(sandbox_env, name, f"tests/{name}/", lock_timeout_seconds=3)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This test's workspaces in a directory of its own: the other xdist worker creates and removes
    workspaces of the same stack in the session's TMPDIR meanwhile (seen in CI: a scale-out test's plan
    counted as ours)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _workspaces() -> set[str]:
    return {str(p) for p in Path(tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*")}


def _our_terraform() -> list:
    """The live terraform processes of STACK working in this test's directory."""
    return [p for p in live_terraform_processes(STACK) if (p.cwd or "").startswith(tempfile.gettempdir())]


def _key(backend_block: str) -> str:
    return state_key(resolve.terraform_backend(backend_block), STACK)


def test_the_workspace_initialised_ahead_is_used_with_the_pending_variable(backend_block) -> None:
    before = _workspaces()
    name = f"ahead-{uuid.uuid4().hex[:6]}"
    with init_ahead(STACK, {"name": name}, backend_block, AWS_BLOCK, pending=("ami_id",)) as ahead:
        assert settle_ahead(STACK) is ahead and ahead.ready, ahead.error
        assert not _our_terraform()  # settled: no init of ours still runs
        assert (Path(ahead.workspace.path) / ".terraform" / "terraform.tfstate").is_file()
        # the sweep of dead runs' workspaces sees a live owner (this process)
        assert ahead.workspace.root not in tf.sweep_workspaces(min_age_seconds=0)
        # another init of the stack (no ami_id: a stale-lock release's) does not take it
        other, _, _ = init_workspace(STACK, {}, _key(backend_block), backend_block, AWS_BLOCK)
        assert other.root != ahead.workspace.root
        tf.remove_workspace(other)
        variables = {"name": name, "ami_id": "ami-12345678"}
        workspace, runner, backend = init_workspace(
            STACK, variables, _key(backend_block), backend_block, AWS_BLOCK
        )
        assert workspace == ahead.workspace and backend.bucket
        assert json.loads((Path(workspace.path) / tf.VAR_FILE).read_text()) == variables
        assert (Path(workspace.path) / tf.VAR_FILE).stat().st_mode & 0o777 == 0o600
        again, _, _ = init_workspace(STACK, variables, _key(backend_block), backend_block, AWS_BLOCK)
        assert again.root != workspace.root  # handed over once only
        tf.remove_workspace(again)
    assert Path(workspace.root).is_dir()  # handed over: the taker removes it
    tf.remove_workspace(workspace)
    assert _workspaces() == before


def test_other_variables_get_a_fresh_init_and_the_unused_workspace_is_removed(backend_block) -> None:
    before = _workspaces()
    with init_ahead(STACK, {"name": "one"}, backend_block, AWS_BLOCK, pending=("ami_id",)) as ahead:
        settle_ahead(STACK)
        variables = {"name": "two", "ami_id": "ami-12345678"}
        workspace, _, _ = init_workspace(STACK, variables, _key(backend_block), backend_block, AWS_BLOCK)
        assert workspace.root != ahead.workspace.root
        assert (Path(workspace.path) / ".terraform" / "terraform.tfstate").is_file()
        tf.remove_workspace(workspace)
        assert Path(ahead.workspace.root).is_dir()
    assert _workspaces() == before


def test_a_failed_init_ahead_falls_back_to_a_fresh_init(backend_block, monkeypatch) -> None:
    before = _workspaces()
    real_init = tf.init

    def failing_ahead(runner, *args, **kwargs):
        if threading.current_thread().name.startswith("ahead"):
            raise RuntimeError("init ahead failed (test)")
        return real_init(runner, *args, **kwargs)

    monkeypatch.setattr(tf, "init", failing_ahead)
    with init_ahead(STACK, {"name": "x"}, backend_block, AWS_BLOCK, pending=("ami_id",)) as ahead:
        settle_ahead()
        assert not ahead.ready and "test" in str(ahead.error)
        variables = {"name": "x", "ami_id": "ami-12345678"}
        workspace, _, _ = init_workspace(STACK, variables, _key(backend_block), backend_block, AWS_BLOCK)
        assert workspace.root != ahead.workspace.root
        assert not Path(ahead.workspace.root).exists()  # the failed one is gone at once
        assert (Path(workspace.path) / ".terraform" / "terraform.tfstate").is_file()
        tf.remove_workspace(workspace)
    assert _workspaces() == before


def test_an_abandoned_init_ahead_is_stopped_and_removed(backend_block) -> None:
    """The bake fails (or the run is cancelled) while the init ahead still runs: it is stopped and its
    workspace removed; no terraform process is left."""
    before = _workspaces()
    with pytest.raises(RuntimeError, match="bake failed"):
        with init_ahead(STACK, {"name": "y"}, backend_block, AWS_BLOCK) as ahead:
            end = time.monotonic() + 30
            while not _our_terraform() and ahead.thread.is_alive() and time.monotonic() < end:
                time.sleep(0.02)
            raise RuntimeError("bake failed (test)")
    assert not ahead.thread.is_alive()
    assert not _our_terraform()
    assert _workspaces() == before
