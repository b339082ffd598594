"""Scale-out on Prefect's own engine: `scripts/scale-out up|down|status` (python -m deployments.scale_out).

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
import asyncio
import base64
import json
import logging
import os
import pwd
import secrets
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import ToolError, ToolMissing
from tools.process import BASE_ENV, run
from tools.redact import register_secret
from tools.sandbox import free_port, pid_alive, port_free, spawn, stop_pid
from tools.settings import REPO_ROOT, public_env, state_dir

HOST = "127.0.0.1"
POOL = "devops-process"
DB_NAME = DB_USER = "prefect"
PG_SYSTEM_USER = "postgres"
DEFAULT_PG_PORT = 54329
DEFAULT_API_PORT = 4300
HEARTBEAT_SECONDS = 30  # Prefect's minimum flow-run heartbeat interval
ZOMBIE_AUTOMATION = "devops-flows: crash flow runs whose heartbeats stopped"

__all__ = [
    "ScaleOut",
    "database_url",
    "down",
    "ensure_zombie_automation",
    "postgres_bin_dir",
    "start_worker",
    "status",
    "stop_worker",
    "up",
]


def log(message: str) -> None:
    print(f"[scale-out] {message}", flush=True)


def default_dir() -> Path:
    return Path(os.environ.get("DEVOPS_SCALE_OUT_DIR") or state_dir() / "scale-out").resolve()


# ---------------------------------------------------------------- state


@dataclass
class ScaleOut:
    """What `up` started, saved in `<dir>/scale-out.json` so that `down` stops exactly that."""

    dir: Path
    postgres: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    workers: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path | None = None) -> ScaleOut:
        directory = (directory or default_dir()).resolve()
        path = directory / "scale-out.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(directory, data.get("postgres", {}), data.get("server", {}), data.get("workers", {}))

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"postgres": self.postgres, "server": self.server, "workers": self.workers}
        (self.dir / "scale-out.json").write_text(json.dumps(data, indent=2, sort_keys=True))

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.server.get('port')}/api"

    @property
    def pg_dir(self) -> Path:
        return self.dir / "postgres"

    @property
    def password_file(self) -> Path:
        return self.dir / "postgres-password"

    def auth(self) -> str:
        """The server's basic auth (`user:password`), generated on first use, kept 0600 in the state dir."""
        path = self.dir / "prefect-auth"
        if not path.exists():
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"admin:{secrets.token_urlsafe(18)}")
        value = path.read_text().strip()
        register_secret(value.partition(":")[2])
        return value

    def client_settings(self) -> dict:
        """Prefect settings for a client of this server (temporary_settings(updates=...))."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

        return {PREFECT_API_URL: self.api_url, PREFECT_API_AUTH_STRING: self.auth()}

    def logfile(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: $DEVOPS_PG_BIN, PATH (symlinks resolved), or the newest
    /usr/lib/postgresql/<version>/bin."""
    candidates: list[Path] = []
    if os.environ.get("DEVOPS_PG_BIN"):
        candidates.append(Path(os.environ["DEVOPS_PG_BIN"]))
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name))
    candidates += reversed(versions)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise ToolMissing(
        "PostgreSQL's initdb/pg_ctl were not found",
        hint="apt-get install postgresql-15, or set DEVOPS_PG_BIN",
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if not runuser:
        raise ToolMissing(
            "runuser is needed to run PostgreSQL as the postgres user", hint="apt-get install util-linux"
        )
    return [runuser, "-u", PG_SYSTEM_USER, "--", *argv]


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _password(state: ScaleOut) -> str:
    if not state.password_file.exists():
        fd = os.open(state.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return register_secret(state.password_file.read_text().strip()) or ""


def database_url(state: ScaleOut) -> str:
    """The server's connection URL; it holds the password, so it goes to the server's environment only."""
    return f"postgresql+asyncpg://{DB_USER}:{_password(state)}@{HOST}:{state.postgres['port']}/{DB_NAME}"


def _initdb(state: ScaleOut, bindir: Path) -> None:
    data = state.pg_dir / "data"
    if (data / "PG_VERSION").exists():
        return
    state.pg_dir.mkdir(parents=True, exist_ok=True)
    state.pg_dir.chmod(0o700)
    _give_to_postgres(state.pg_dir)
    password = _password(state)
    pwfile = state.pg_dir / "initdb-pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    _give_to_postgres(pwfile)
    try:
        log(f"postgres: initdb {data}")
        run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    DB_USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            what="initdb",
            timeout=180,
            hint=f"see {data} and the output above",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# devops-flows scale-out: listen address, port and socket directory\n"
            "include_if_exists = 'devops-flows.conf'\n"
        )


def _pg_running(state: ScaleOut, bindir: Path) -> bool:
    data = state.pg_dir / "data"
    if not (data / "PG_VERSION").exists():
        return False
    result = run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "status"]),
        check=False,
        what="pg_ctl status",
        timeout=30,
        log_line=lambda _s, _l: False,
    )
    return result.exit_code == 0


def start_postgres(state: ScaleOut, port: int | None = None) -> None:
    bindir = postgres_bin_dir()
    _initdb(state, bindir)
    data = state.pg_dir / "data"
    if _pg_running(state, bindir) and state.postgres.get("port"):
        log(f"postgres: reusing {HOST}:{state.postgres['port']}")
        return
    port = port or state.postgres.get("port") or DEFAULT_PG_PORT
    if not port_free(port):
        port = free_port()
    sockets = state.pg_dir / "run"
    sockets.mkdir(exist_ok=True)
    _give_to_postgres(sockets)
    conf = data / "devops-flows.conf"
    conf.write_text(
        f"listen_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = '{sockets}'\n"
        "max_connections = 200\n"
    )
    _give_to_postgres(conf)
    logfile = state.pg_dir / "postgres.log"
    log(f"postgres: starting on {HOST}:{port} ({bindir})")
    run(
        _as_postgres(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "90", "start"]
        ),
        what="pg_ctl start",
        timeout=120,
        hint=f"see {logfile}",
    )
    state.postgres.update(started=True, port=port, bindir=str(bindir))
    state.save()
    asyncio.run(_ensure_database(state))


async def _ensure_database(state: ScaleOut) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=HOST,
        port=state.postgres["port"],
        user=DB_USER,
        password=_password(state),
        database="postgres",
        timeout=30,
    )
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME):
            await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            log(f"postgres: created database {DB_NAME}")
    finally:
        await conn.close()


def stop_postgres(state: ScaleOut) -> None:
    if not state.postgres.get("started"):
        return
    bindir = Path(state.postgres.get("bindir") or postgres_bin_dir())
    if _pg_running(state, bindir):
        log("postgres: stopping")
        run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(state.pg_dir / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ]
            ),
            what="pg_ctl stop",
            timeout=90,
        )
    state.postgres["started"] = False
    state.save()


# ---------------------------------------------------------------- Prefect server


def healthy(api: str, auth: str | None = None) -> bool:
    request = urllib.request.Request(f"{api}/health")  # noqa: S310 - loopback
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=2):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


def _prefect_env(state: ScaleOut, home: Path) -> dict[str, str]:
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
        **_prefect_env(state, state.dir / "server-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url(state),
        "PREFECT_SERVER_API_AUTH_STRING": state.auth(),
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_UI_API_URL": state.api_url,
    }
    logfile = state.logfile("prefect-server")
    pid = spawn(
        [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
        logfile,
        env=env,
    )
    state.server.update(started=True, pid=pid)
    state.save()
    end = time.monotonic() + 180
    while not healthy(state.api_url, state.auth()):
        if time.monotonic() > end or not pid_alive(pid):
            tail = logfile.read_text(errors="replace").splitlines()[-40:] if logfile.exists() else []
            raise ToolError(
                "the Prefect server on PostgreSQL did not start", tail=tail, hint=f"see {logfile}"
            )
        time.sleep(0.5)
    log(f"server: {state.api_url} on PostgreSQL {HOST}:{state.postgres['port']}/{DB_NAME}")


def _prefect_cli(state: ScaleOut, argv: list[str], what: str, timeout: float) -> None:
    """A Prefect CLI/module call against this server, in its own process (our API URL, not the caller's)."""
    run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env={**_prefect_env(state, state.dir / "client-home"), "COLUMNS": "200"},
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
            "deployments.scale_out",
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


def ensure_zombie_automation(within_seconds: int = 90) -> str:
    """Prefect's documented zombie detection: a flow run that sent a heartbeat and then, within
    `within_seconds`, neither another heartbeat nor a final state, is set to Crashed (its worker or host
    died). Workers send heartbeats every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (>= 30)."""
    from datetime import timedelta

    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    if within_seconds <= HEARTBEAT_SECONDS:
        raise ValueError(f"within_seconds must exceed the heartbeat interval ({HEARTBEAT_SECONDS}s)")
    automation = Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when its heartbeats stop (the worker or its host died).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message="Flow run marked as crashed: its heartbeats stopped."
            )
        ],
    )
    from deployments.setup import upsert_automation

    return upsert_automation(automation)


def stop_server(state: ScaleOut) -> None:
    if state.server.get("started") and state.server.get("pid"):
        log(f"server: stopping pid {state.server['pid']}")
        stop_pid(state.server["pid"], "prefect server", seconds=20)
    state.server.update(started=False, pid=None)
    state.save()


# ---------------------------------------------------------------- workers


def start_worker(state: ScaleOut, name: str, limit: int | None = None) -> int:
    """One `prefect worker start` process (own session, own PREFECT_HOME, as on its own host)."""
    current = state.workers.get(name, {})
    if pid_alive(current.get("pid")):
        return current["pid"]
    home = state.dir / "workers" / name
    home.mkdir(parents=True, exist_ok=True)
    # As on its own host: the worker holds its Prefect API credentials and the sandbox's endpoints and
    # paths; the flows it runs get every other credential from blocks, never from its environment.
    env = {
        **public_env(),
        **_prefect_env(state, home),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "5"),
    }
    argv = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        POOL,
        "--name",
        name,
        "--type",
        "process",
    ]
    if limit:
        argv += ["--limit", str(limit)]
    pid = spawn(argv, state.logfile(name), env=env, inherit=(*BASE_ENV, "DEVOPS_SANDBOX_DIR", "PYTHONPATH"))
    state.workers[name] = {"pid": pid, "started": True, "limit": limit}
    state.save()
    log(f"worker: {name} (pid {pid}, log {state.logfile(name)})")
    return pid


def stop_worker(state: ScaleOut, name: str) -> None:
    current = state.workers.get(name, {})
    if current.get("started") and current.get("pid"):
        stop_pid(current["pid"], name, seconds=20)
    state.workers.pop(name, None)
    state.save()


def wait_for_workers(state: ScaleOut, names: list[str], seconds: float = 120) -> None:
    """Until every named worker has sent a heartbeat to the server (status ONLINE)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    end = time.monotonic() + seconds
    with temporary_settings(updates=state.client_settings()), get_client(sync_client=True) as client:
        while True:
            online = {
                w.name
                for w in client.read_workers_for_work_pool(POOL)
                if w.status and w.status.value == "ONLINE"
            }
            if set(names) <= online:
                return
            if time.monotonic() > end:
                raise ToolError(
                    f"workers {sorted(set(names) - online)} did not come online within {seconds:g}s",
                    hint=f"see {state.dir / 'logs'}",
                )
            time.sleep(1)


# ---------------------------------------------------------------- commands


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


if __name__ == "__main__":
    sys.exit(main())
