"""The scale-out demo's names and its state: what `up` started, saved in `<dir>/scale-out.json`."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tools.redact import register_secret
from tools.settings import state_dir

HOST = "127.0.0.1"
POOL = "devops-process"
DB_NAME = DB_USER = "prefect"
DEFAULT_PG_PORT = 54329
DEFAULT_API_PORT = 4300


def log(message: str) -> None:
    print(f"[scale-out] {message}", flush=True)


def default_dir() -> Path:
    return Path(os.environ.get("DEVOPS_SCALE_OUT_DIR") or state_dir() / "scale-out").resolve()


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
