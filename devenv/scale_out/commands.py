"""Scale-out on Prefect's own engine: `scripts/scale-out up|down|status` (python -m devenv.scale_out).

up      idempotent. PostgreSQL 15 initialised in `<state>/postgres` (initdb/pg_ctl discovered: $DEVOPS_PG_BIN,
        PATH, or the newest /usr/lib/postgresql/*/bin; run as the `postgres` system user when we are root,
        because PostgreSQL refuses to run as root), listening on 127.0.0.1 only, password auth; a Prefect
        server on it (`PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...`, in the server's
        environment only); `deployments.setup` against it (blocks, the `devops-process` work pool, one strict
        concurrency limit per Terraform stack, the failure automation) plus the zombie-run automation (a run
        whose heartbeats stop is marked Crashed); `prefect --no-prompt deploy --all` of prefect.yaml; and N
        process workers (`prefect worker start --pool devops-process --name worker-i`), each a separate
        process with its own PREFECT_HOME, as if on its own host.
down    stops only what `up` started (recorded in `<state>/scale-out.json`): workers, server, PostgreSQL.
status  one line per component; exit 1 when one is down.

State: `<sandbox state>/scale-out` (tools.settings.state_dir()), or --state-dir / $DEVOPS_SCALE_OUT_DIR.
No scheduler of our own: distribution, concurrency limits and crash detection are Prefect's.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from devenv.processes import pid_alive, port_free
from devenv.scale_out.automation import ZOMBIE_AUTOMATION, ensure_zombie_automation
from devenv.scale_out.postgres import start_postgres, stop_postgres
from devenv.scale_out.server import configure, healthy, start_server, stop_server
from devenv.scale_out.state import HOST, POOL, ScaleOut, log
from devenv.scale_out.workers import start_worker, stop_worker, wait_for_workers
from tools.errors import ToolError


def up(
    directory: Path | None = None,
    workers: int = 2,
    limit: int | None = None,
    pg_port: int | None = None,
    api_port: int | None = None,
    deploy: bool = True,
    ui: bool = True,
    zombie_seconds: int = 90,
) -> ScaleOut:
    if workers < 1:
        raise ValueError("workers must be >= 1")
    started = time.monotonic()
    state = ScaleOut.load(directory)
    state.dir.mkdir(parents=True, exist_ok=True)
    state.dir.chmod(0o711)  # the postgres user must traverse it to reach its data directory
    start_postgres(state, pg_port)
    start_server(state, api_port, ui=ui)
    configure(state, deploy=deploy, zombie_seconds=zombie_seconds)
    names = [f"worker-{i}" for i in range(1, workers + 1)]
    for name in names:
        start_worker(state, name, limit)
    wait_for_workers(state, names)
    log(
        f"up in {time.monotonic() - started:.1f}s: {len(names)} workers on pool {POOL}; "
        f"UI http://{HOST}:{state.server['port']} ; PREFECT_API_URL={state.api_url}"
    )
    return state


def down(directory: Path | None = None) -> None:
    state = ScaleOut.load(directory)
    for name in list(state.workers):
        log(f"worker: stopping {name}")
        stop_worker(state, name)
    stop_server(state)
    stop_postgres(state)


def status(directory: Path | None = None) -> bool:
    state = ScaleOut.load(directory)
    rows: list[tuple[str, bool, str]] = []
    pg_ok = bool(state.postgres.get("port")) and not port_free(state.postgres["port"])
    rows.append(("postgres", pg_ok, f"{HOST}:{state.postgres.get('port')}"))
    server_ok = bool(state.server.get("port")) and healthy(state.api_url, state.auth())
    rows.append(("prefect-server", server_ok, state.api_url if state.server.get("port") else "-"))
    for name, info in sorted(state.workers.items()):
        rows.append((name, pid_alive(info.get("pid")), f"pid {info.get('pid')}"))
    for name, ok, where in rows:
        print(f"{name:16} {'up' if ok else 'DOWN':5} {where}")
    return all(ok for _n, ok, _w in rows) and len(rows) > 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/scale-out", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="default: <sandbox state>/scale-out")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start PostgreSQL, the server, the workers; deploy prefect.yaml")
    p_up.add_argument("--workers", type=int, default=int(os.environ.get("DEVOPS_WORKERS", "2")))
    p_up.add_argument(
        "--limit", type=int, default=None, help="flow runs at a time per worker (default: no limit)"
    )
    p_up.add_argument("--pg-port", type=int, default=int(os.environ.get("DEVOPS_PG_PORT", "0")) or None)
    p_up.add_argument(
        "--api-port", type=int, default=int(os.environ.get("DEVOPS_SCALE_OUT_PORT", "0")) or None
    )
    p_up.add_argument("--no-deploy", action="store_true", help="do not run prefect deploy --all")
    p_up.add_argument(
        "--zombie-seconds",
        type=int,
        default=90,
        help="mark a run Crashed this long after its last heartbeat (> 30)",
    )
    sub.add_parser("down", help="stop what up started")
    sub.add_parser("status", help="one line per component")
    p_conf = sub.add_parser("configure", help=argparse.SUPPRESS)
    p_conf.add_argument("--zombie-seconds", type=int, default=90)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every API request: our progress lines only
    try:
        if args.command == "up":
            up(
                args.state_dir,
                args.workers,
                args.limit,
                args.pg_port,
                args.api_port,
                deploy=not args.no_deploy,
                zombie_seconds=args.zombie_seconds,
            )
        elif args.command == "down":
            down(args.state_dir)
        elif args.command == "status":
            return 0 if status(args.state_dir) else 1
        else:  # configure: runs in its own process with PREFECT_API_URL set to our server
            from deployments.setup import setup

            for key, value in setup().items():
                log(f"{key}: {value if not isinstance(value, list) else ', '.join(value) or '-'}")
            log(f"automation: {ZOMBIE_AUTOMATION} ({ensure_zombie_automation(args.zombie_seconds)})")
    except ToolError as exc:
        print(f"[scale-out] error: {exc}", file=sys.stderr)
        return 2
    return 0
