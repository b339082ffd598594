"""The sandbox comes up from nothing in a fresh state directory, reports healthy, reuses what runs on
a second `up`, and `down` stops exactly what it started (the shared engine it reused stays up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devenv.processes import pid_alive
from devenv.services import docker_ping
from tests.conftest import REPO
from tools.settings import load_env


def sandbox(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVOPS_SANDBOX_DIR": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "devenv.sandbox", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_up_status_reuse_down(tmp_path: Path, sandbox_env: dict[str, str]) -> None:
    state = tmp_path / "state"
    first = sandbox(state, "up")
    assert first.returncode == 0, first.stdout + first.stderr
    env = load_env(state / "env")
    assert oct((state / "env").stat().st_mode & 0o777) == "0o600"
    assert env["DEVOPS_REGISTRY"] != sandbox_env["DEVOPS_REGISTRY"]  # its own registry, on a free port
    assert env["DEVOPS_REGISTRY_PASSWORD"] not in first.stdout + first.stderr
    started = json.loads((state / "sandbox.json").read_text())
    assert started["registry"]["started"] and started["moto"]["started"]
    assert started["docker"]["started"] is False  # the reachable engine is reused, not duplicated

    status = sandbox(state, "status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("healthy") == 4

    second = sandbox(state, "up")
    assert second.returncode == 0
    assert "registry: reusing" in second.stdout and "moto: reusing" in second.stdout
    assert load_env(state / "env") == env  # same endpoints, same credentials

    down = sandbox(state, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "docker: not started by the sandbox; left alone" in down.stdout
    assert not pid_alive(started["registry"]["pid"]) and not pid_alive(started["moto"]["pid"])
    assert docker_ping(sandbox_env["DOCKER_HOST"])  # the shared engine is still there
    assert sandbox(state, "status").returncode == 1


def test_missing_tool_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "DEVOPS_SANDBOX_DIR": str(tmp_path), "PATH": "/nonexistent"}
    out = subprocess.run(
        [sys.executable, "-m", "devenv.sandbox", "up"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "packer is missing" in out.stderr and "terraform is missing" in out.stderr
