"""The scale-out server's PostgreSQL (started by devenv.services): its password, kept 0600 in the state
dir, and the connection URL, which holds it and so goes to the server's environment only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from devenv import services
from devenv.scale_out.state import DB_NAME, DB_USER, DEFAULT_PG_PORT, HOST, ScaleOut, log
from tools.redact import register_secret


def _password(state: ScaleOut) -> str:
    if not state.password_file.exists():
        fd = os.open(state.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return register_secret(state.password_file.read_text().strip()) or ""


def database_url(state: ScaleOut) -> str:
    """The server's connection URL; it holds the password, so it goes to the server's environment only."""
    return f"postgresql+asyncpg://{DB_USER}:{_password(state)}@{HOST}:{state.postgres['port']}/{DB_NAME}"


def start_postgres(state: ScaleOut, port: int | None = None) -> None:
    if state.postgres.get("port"):
        bindir = Path(state.postgres.get("bindir") or services.postgres_bin_dir())
        if services.postgres_running(state.pg_dir, bindir):
            log(f"postgres: reusing {HOST}:{state.postgres['port']}")
            return
    port = port or state.postgres.get("port") or DEFAULT_PG_PORT
    state.dir.mkdir(parents=True, exist_ok=True)  # the password file's directory (the bench's is new)
    password = _password(state)
    bindir, port = services.start_postgres(state.pg_dir, port, DB_USER, password, DB_NAME, say=log)
    state.postgres.update(started=True, port=port, bindir=str(bindir))
    state.save()


def stop_postgres(state: ScaleOut) -> None:
    if not state.postgres.get("started"):
        return
    bindir = Path(state.postgres.get("bindir") or services.postgres_bin_dir())
    services.stop_postgres(state.pg_dir, bindir, say=log)
    state.postgres["started"] = False
    state.save()
