"""Block types register with `prefect block register -m blocks`; the bootstrap is idempotent and quiet."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_block_register_module(prefect_server: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "devops-flows App Secrets" in out.stdout or "Successfully registered" in out.stdout


def test_bootstrap_twice_prints_names_never_values(prefect_server: str, sandbox_env: dict[str, str]) -> None:
    from blocks import REGISTRY_BLOCK, AppSecrets, DockerRegistryCredentials

    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "blocks.bootstrap"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
        )
        assert out.returncode == 0, out.stderr
        assert f"block saved: {REGISTRY_BLOCK}" in out.stdout
        assert sandbox_env["DEVOPS_REGISTRY_PASSWORD"] not in out.stdout + out.stderr
    creds = DockerRegistryCredentials.load(REGISTRY_BLOCK)
    assert creds.password.get_secret_value() == sandbox_env["DEVOPS_REGISTRY_PASSWORD"]
    assert "PROJECT_DB_PASSWORD" in AppSecrets.load("devops-app-secrets").values
