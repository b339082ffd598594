"""The scale-out's Prefect server on PostgreSQL (started by devenv.services), and its configuration:
blocks, work pool, per-stack limits, automations, then every deployment of prefect.yaml."""

from __future__ import annotations

import sys
from pathlib import Path

from devenv import services
from devenv.processes import free_port, pid_alive, port_free, stop_pid
from devenv.scale_out.postgres import database_url
from devenv.scale_out.state import DB_NAME, DEFAULT_API_PORT, HOST, ScaleOut, log
from tools.process import BASE_ENV, run
from tools.settings import REPO_ROOT


def healthy(api: str, auth: str | None = None) -> bool:
    return services.prefect_healthy(api, auth)


def prefect_env(state: ScaleOut, home: Path) -> dict[str, str]:
    return {
        "PREFECT_API_URL": state.api_url,
        "PREFECT_API_AUTH_STRING": state.auth(),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def start_server(state: ScaleOut, port: int | None = None, ui: bool = True) -> None:
    if pid_alive(state.server.get("pid")) and healthy(state.api_url, state.auth()):
        log(f"server: reusing {state.api_url}")
        return
    port = port or state.server.get("port") or DEFAULT_API_PORT
    if not port_free(port):
        port = free_port()
    state.server.update(port=port)
    env = {
        **prefect_env(state, state.dir / "server-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url(state),
        "PREFECT_SERVER_API_AUTH_STRING": state.auth(),
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_UI_API_URL": state.api_url,
    }
    pid = services.start_prefect_server(
        port, state.logfile("prefect-server"), env=env, auth=state.auth(), seconds=180
    )
    state.server.update(started=True, pid=pid)
    state.save()
    log(f"server: {state.api_url} on PostgreSQL {HOST}:{state.postgres['port']}/{DB_NAME}")


def stop_server(state: ScaleOut) -> None:
    if state.server.get("started") and state.server.get("pid"):
        log(f"server: stopping pid {state.server['pid']}")
        stop_pid(state.server["pid"], "prefect server", seconds=20)
    state.server.update(started=False, pid=None)
    state.save()


def _prefect_cli(state: ScaleOut, argv: list[str], what: str, timeout: float) -> None:
    """A Prefect CLI/module call against this server, in its own process (our API URL, not the caller's)."""
    run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env={**prefect_env(state, state.dir / "client-home"), "COLUMNS": "200"},
        inherit=(*BASE_ENV, "DEVOPS_*"),  # the sandbox's location, for the blocks' bootstrap
        what=what,
        timeout=timeout,
    )


def configure(state: ScaleOut, deploy: bool = True, zombie_seconds: int = 90) -> None:
    """Blocks, work pool, per-stack limits, automations; then every deployment of prefect.yaml."""
    _prefect_cli(
        state,
        [
            "-m",
            "devenv.scale_out",
            "--state-dir",
            str(state.dir),
            "configure",
            "--zombie-seconds",
            str(zombie_seconds),
        ],
        "configure",
        300,
    )
    if not deploy:
        return
    declared, present = deployable()
    if present == declared:
        log("deploy: prefect --no-prompt deploy --all")
        _prefect_cli(state, ["-m", "prefect", "--no-prompt", "deploy", "--all"], "prefect deploy --all", 600)
        return
    missing = sorted(set(declared) - set(present))
    log(f"deploy: entrypoints missing for {', '.join(missing)}; deploying the {len(present)} others")
    if present:
        names = [arg for name in present for arg in ("-n", name)]
        _prefect_cli(state, ["-m", "prefect", "--no-prompt", "deploy", *names], "prefect deploy", 600)


def deployable() -> tuple[list[str], list[str]]:
    """prefect.yaml's deployment names, and those whose entrypoint file exists."""
    from deployments.declarations import load

    declarations = load().deployments
    declared = [d.name for d in declarations]
    present = [d.name for d in declarations if (REPO_ROOT / d.entrypoint.partition(":")[0]).exists()]
    return declared, present
