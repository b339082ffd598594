"""The one place that starts and stops the local services: a Prefect server, moto's AWS server, an
htpasswd-protected registry, PostgreSQL and dockerd. The sandbox, the main job, the scale-out demo, the
bench and the tests' fixtures all start theirs here.

Each `start_*` spawns the service detached from us (own session, output to a 0600 log file), waits until
it answers, and returns its pid; `stop_pid` stops any of them by process group (PostgreSQL: `stop_postgres`,
through pg_ctl). A service that dies or does not answer in time raises ToolError with its log's tail.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from devenv import moto_server
from devenv.processes import free_port, http_status, log_tail, pid_alive, port_free, spawn, stop_pid
from tools.errors import ToolError, ToolMissing
from tools.process import run

HOST = "127.0.0.1"
PG_SYSTEM_USER = "postgres"

__all__ = [
    "docker_ping",
    "free_port",
    "htpasswd_line",
    "pid_alive",
    "port_free",
    "postgres_bin_dir",
    "postgres_running",
    "prefect_healthy",
    "start_dockerd",
    "start_moto",
    "start_postgres",
    "start_prefect_server",
    "start_registry",
    "stop_pid",
    "stop_postgres",
    "wait_ready",
]


def wait_ready(check: Callable[[], bool], seconds: float, what: str, pid: int, logfile: Path) -> None:
    """Until `check()` holds; when the service exits or `seconds` pass, it is stopped and ToolError
    raised with its log's tail."""
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end or not pid_alive(pid):
            stop_pid(pid, what, seconds=10)
            raise ToolError(f"{what} did not start", tail=log_tail(logfile), hint=f"see {logfile}")
        time.sleep(0.3)


# ---------------------------------------------------------------- Prefect server


def prefect_healthy(api: str, auth: str | None = None) -> bool:
    """The server at `api` (`http://host:port/api`) answers its health check (with basic auth if given)."""
    request = urllib.request.Request(f"{api}/health")  # noqa: S310 - loopback
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=2):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


def start_prefect_server(
    port: int,
    logfile: Path,
    env: dict[str, str] | None = None,
    auth: str | None = None,
    seconds: float = 120,
    cwd: Path | None = None,
) -> int:
    """`prefect server start` on 127.0.0.1:`port`; `env` adds its settings (home, database, auth)."""
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    pid = spawn(argv, logfile, env=env, cwd=cwd)
    api = f"http://{HOST}:{port}/api"
    wait_ready(lambda: prefect_healthy(api, auth), seconds, f"the Prefect server on {api}", pid, logfile)
    return pid


# ---------------------------------------------------------------- moto, registry, dockerd


def start_moto(port: int, logfile: Path, seconds: float = 60, cwd: Path | None = None) -> int:
    """moto's AWS server (with our fixes, devenv.moto_server) on 127.0.0.1:`port`."""
    pid = spawn(moto_server.argv(port), logfile, cwd=cwd)
    url = f"http://{HOST}:{port}/moto-api/"
    wait_ready(lambda: http_status(url) == 200, seconds, "moto_server", pid, logfile)
    return pid


def htpasswd_line(user: str, password: str) -> str:
    """bcrypt htpasswd line; the password goes to htpasswd on stdin, never on its command line."""
    exe = shutil.which("htpasswd")
    if not exe:
        raise ToolMissing("htpasswd is not installed", hint="apt-get install apache2-utils")
    out = subprocess.run(
        [exe, "-niB", user], input=password + "\n", capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def start_registry(
    root: Path,
    port: int,
    user: str,
    password: str,
    logfile: Path,
    realm: str = "devops-flows",
    log_level: str = "info",
    delete: bool = True,
) -> int:
    """`docker-registry serve` on 127.0.0.1:`port` with htpasswd auth, its storage under `root`."""
    exe = shutil.which("docker-registry")
    if not exe:
        raise ToolMissing("docker-registry is not installed", hint="apt-get install docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    htpasswd = root / "htpasswd"
    line = htpasswd_line(user, password)
    fd = os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(line + "\n")
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: {log_level}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        + ("  delete:\n    enabled: true\n" if delete else "")
        + f"http:\n  addr: {HOST}:{port}\n  secret: {secrets.token_hex(16)}\n"
        f"auth:\n  htpasswd:\n    realm: {realm}\n    path: {htpasswd}\n"
    )
    config.chmod(0o600)
    pid = spawn([exe, "serve", str(config)], logfile)
    wait_ready(lambda: http_status(f"http://{HOST}:{port}/v2/") == 401, 30, "registry", pid, logfile)
    return pid


def docker_ping(host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        ok = bool(client.ping())
        client.close()
        return ok
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def start_dockerd(root: Path, logfile: Path, say: Callable[[str], None] = print) -> tuple[int, str]:
    """dockerd with its data, exec root, pid file and socket under `root`; (pid, DOCKER_HOST)."""
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise ToolMissing(
            "no Docker engine is reachable and dockerd is not installed", hint="run scripts/setup"
        )
    if os.geteuid() != 0:
        raise ToolMissing(
            "no Docker engine is reachable; starting one needs root", hint="start Docker, or set DOCKER_HOST"
        )
    sock = root / "docker.sock"
    if len(str(sock)) > 100:
        raise ToolError(
            f"state directory path too long for a unix socket: {sock}", hint="set DEVOPS_SANDBOX_DIR"
        )
    for stale in (sock, root / "docker.pid"):
        stale.unlink(missing_ok=True)
    argv = [
        dockerd,
        "--data-root",
        str(root / "docker"),
        "--exec-root",
        str(root / "docker-exec"),
        "--pidfile",
        str(root / "docker.pid"),
        "-H",
        f"unix://{sock}",
        "--storage-driver",
        os.environ.get("DEVOPS_DOCKER_STORAGE_DRIVER", "overlay2"),
    ]
    say("docker: starting dockerd " + " ".join(argv[1:]))
    # A TMPDIR of its own: started from a test session (an engine restart), dockerd would otherwise keep
    # that session's TMPDIR, deleted when the session ends, and fail every later build and pull.
    tmp = root / "docker-tmp"
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    return spawn(argv, logfile, env={"TMPDIR": str(tmp)}), f"unix://{sock}"


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


def _initdb(pg_dir: Path, bindir: Path, user: str, password: str, say: Callable[[str], None]) -> None:
    data = pg_dir / "data"
    if (data / "PG_VERSION").exists():
        return
    pg_dir.mkdir(parents=True, exist_ok=True)
    pg_dir.chmod(0o700)
    _give_to_postgres(pg_dir)
    pwfile = pg_dir / "initdb-pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    _give_to_postgres(pwfile)
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}"]
    initdb += ["--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"]
    try:
        say(f"postgres: initdb {data}")
        run(_as_postgres(initdb), what="initdb", timeout=180, hint=f"see {data} and the output above")
    finally:
        pwfile.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# devops-flows scale-out: listen address, port and socket directory\n"
            "include_if_exists = 'devops-flows.conf'\n"
        )


def postgres_running(pg_dir: Path, bindir: Path) -> bool:
    data = pg_dir / "data"
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


def start_postgres(
    pg_dir: Path, port: int, user: str, password: str, database: str, say: Callable[[str], None] = print
) -> tuple[Path, int]:
    """A PostgreSQL cluster in `pg_dir` (initialised once; superuser `user` with `password`, host auth
    by password) on 127.0.0.1:`port` (a free one if taken), with `database`; (bin dir, port)."""
    bindir = postgres_bin_dir()
    _initdb(pg_dir, bindir, user, password, say)
    data = pg_dir / "data"
    if not port_free(port):
        port = free_port()
    sockets = pg_dir / "run"
    sockets.mkdir(exist_ok=True)
    _give_to_postgres(sockets)
    conf = data / "devops-flows.conf"
    conf.write_text(
        f"listen_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = '{sockets}'\n"
        "max_connections = 200\n"
    )
    _give_to_postgres(conf)
    logfile = pg_dir / "postgres.log"
    say(f"postgres: starting on {HOST}:{port} ({bindir})")
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "90", "start"]
    run(_as_postgres(pg_ctl), what="pg_ctl start", timeout=120, hint=f"see {logfile}")
    asyncio.run(_ensure_database(port, user, password, database, say))
    return bindir, port


async def _ensure_database(
    port: int, user: str, password: str, name: str, say: Callable[[str], None]
) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=HOST, port=port, user=user, password=password, database="postgres", timeout=30
    )
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
            say(f"postgres: created database {name}")
    finally:
        await conn.close()


def stop_postgres(pg_dir: Path, bindir: Path, say: Callable[[str], None] = print) -> None:
    if postgres_running(pg_dir, bindir):
        say("postgres: stopping")
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(pg_dir / "data"), "-m", "fast", "-w", "-t", "60", "stop"]
        run(_as_postgres(pg_ctl), what="pg_ctl stop", timeout=90)
