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


def test_a_block_is_loaded_once_per_flow_run(prefect_server: str) -> None:
    """blocks/resolve.py: every task of a run asks for the block; the API is read once per run, a subflow
    (a run of its own) reads it once more, and a change of the block shows in the next run only."""
    import uuid

    from prefect import flow, task
    from prefect.blocks.system import Secret

    from blocks import resolve

    name = f"resolve-once-{uuid.uuid4().hex[:8]}"
    Secret(value="v1").save(name, overwrite=True)
    reads: list[str] = []
    load = Secret.load.__func__  # the classmethod's function: count the API reads, then read

    def counting(cls: type[Secret], block_name: str, *args: object, **kwargs: object) -> Secret:
        reads.append(block_name)
        return load(cls, block_name, *args, **kwargs)

    @task
    def value() -> str:
        return resolve.load(Secret, name).get()

    @flow
    def inner() -> str:
        return value()

    @flow
    def outer() -> list[str]:
        seen = [value(), value.submit().result(), resolve.load(Secret, name).get()]
        Secret(value="v2").save(name, overwrite=True)  # edited mid-run: this run keeps what it read
        return [*seen, value(), inner()]

    own = Secret.__dict__.get("load")
    Secret.load = classmethod(counting)  # type: ignore[method-assign, assignment]
    try:
        assert outer() == ["v1", "v1", "v1", "v1", "v2"]
        assert reads == [name, name]  # the run, then its subflow
        assert value.fn() == "v2" and len(reads) == 3  # outside a run: read each time
    finally:
        if own is None:
            del Secret.load
        else:
            Secret.load = own  # type: ignore[method-assign]


def test_shared_with_subflows_reads_each_block_once_for_the_whole_composition(prefect_server: str) -> None:
    """Inside `shared_with_subflows()` a subflow, and a thread started with a copy of the run's context,
    use the run's blocks; concurrent first asks wait for the one read. LOADS counts the reads."""
    import contextvars
    import threading
    import uuid

    from prefect import flow
    from prefect.blocks.system import Secret

    from blocks import resolve

    name = f"resolve-shared-{uuid.uuid4().hex[:8]}"
    Secret(value="v1").save(name, overwrite=True)

    @flow
    def inner() -> str:
        return resolve.load(Secret, name).get()

    @flow
    def outer() -> list[str]:
        with resolve.shared_with_subflows():
            seen: list[str] = []
            threads = [
                threading.Thread(
                    target=contextvars.copy_context().run, args=(lambda: seen.append(inner.fn()),)
                )
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return [*seen, inner(), inner()]

    before = resolve.LOADS[("Secret", name)]
    assert outer() == ["v1"] * 6
    assert resolve.LOADS[("Secret", name)] - before == 1
    assert inner() == "v1" and resolve.LOADS[("Secret", name)] - before == 2  # a run of its own: read again
