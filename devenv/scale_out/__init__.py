"""Scale-out on Prefect's own engine: `scripts/scale-out up|down|status` (`python -m devenv.scale_out`).

PostgreSQL (`postgres`), a Prefect server on it and its configuration (`server`), the zombie-run
automation (`automation`), N process workers (`workers`), their state (`state`), and the commands that
put them together (`commands`). The services themselves start in devenv.services.
"""

from devenv.scale_out.automation import HEARTBEAT_SECONDS, ZOMBIE_AUTOMATION, ensure_zombie_automation
from devenv.scale_out.commands import down, main, status, up
from devenv.scale_out.postgres import database_url, start_postgres, stop_postgres
from devenv.scale_out.server import configure, deployable, healthy, start_server, stop_server
from devenv.scale_out.state import DB_NAME, DB_USER, HOST, POOL, ScaleOut
from devenv.scale_out.workers import start_worker, stop_worker, wait_for_workers
from devenv.services import postgres_bin_dir

__all__ = [
    "DB_NAME",
    "DB_USER",
    "HEARTBEAT_SECONDS",
    "HOST",
    "POOL",
    "ZOMBIE_AUTOMATION",
    "ScaleOut",
    "configure",
    "database_url",
    "deployable",
    "down",
    "ensure_zombie_automation",
    "healthy",
    "main",
    "postgres_bin_dir",
    "start_postgres",
    "start_server",
    "start_worker",
    "status",
    "stop_postgres",
    "stop_server",
    "stop_worker",
    "up",
    "wait_for_workers",
]
