"""The bench's private services: its own moto server (AWS), its own Prefect server, its own blocks.

Nothing the bench creates is visible to the tests running next to it: AMIs (Packer's force_deregister
replaces AMIs by name), launch templates and Terraform state live in a private moto; flow runs, blocks and
concurrency limits live in a private Prefect server. The Docker engine and the registry are the sandbox's
(shared): the bench names its containers, images and volumes `bench-<id>` and removes them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv import services
from devenv.processes import free_port, spawn, stop_pid
from tools.settings import REPO_ROOT, load_env

BENCH_LABEL = "devops-flows.bench"
STATE_BUCKET = "devops-flows-bench-tfstate"
TF_BACKEND_BLOCK = "bench-tf-backend"


@dataclass
class Services:
    """Private moto + Prefect server; `env` is what every bench child process gets.

    The Prefect server keeps its database in a private PostgreSQL (as a production server does) unless
    `database="sqlite"`: on SQLite, writes of the API and of the server's own services collide
    ("database is locked", answered 503) and the client retries after ~2 s, which puts random 2 s steps
    into flow-run times."""

    database: str = "postgres"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="devops-flows-bench-")))
    env: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    _pg: Any = None

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> int:
        """A bench child process in its own session, output to `<home>/<name>.log`; returns its pid."""
        pid = spawn(argv, self.home / f"{name}.log", env={**self.env, **(env or {})}, cwd=REPO_ROOT)
        self.pids.append(pid)
        return pid

    def start(self) -> Services:
        sandbox = load_env()
        if not sandbox:
            raise SystemExit("bench: the sandbox is not up (scripts/sandbox up)")
        moto_port, prefect_port = free_port(), free_port()
        self.env = {
            **sandbox,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": sandbox.get("AWS_DEFAULT_REGION", "eu-central-1"),
            "DEVOPS_TF_STATE_BUCKET": STATE_BUCKET,
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            "PYTHONPATH": str(REPO_ROOT),
            # the bench's inventories live in its home: an allowed Ansible root next to infra/ansible
            "DEVOPS_ANSIBLE_ROOTS": str(self.home),
        }
        os.environ.update(self.env)  # this process talks to the same private services (and its children)
        self.pids.append(services.start_moto(moto_port, self.home / "moto.log", seconds=90, cwd=REPO_ROOT))
        self._bucket()
        self.pids.append(
            services.start_prefect_server(
                prefect_port,
                self.home / "prefect-server.log",
                env=self._start_database(),  # the server's only: the URL holds the password
                seconds=180,
                cwd=REPO_ROOT,
            )
        )
        self._blocks()
        return self

    def _start_database(self) -> dict[str, str]:
        """Start the server's private PostgreSQL (none for sqlite); the server's environment for it."""
        if self.database == "sqlite":
            return {}
        from devenv import scale_out

        self.home.chmod(0o711)  # PostgreSQL runs as the postgres user: it must reach its directory
        self._pg = scale_out.ScaleOut(self.home / "pg")
        scale_out.start_postgres(self._pg, port=free_port())
        return {"PREFECT_API_DATABASE_CONNECTION_URL": scale_out.database_url(self._pg)}

    def _bucket(self) -> None:
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name=self.env["AWS_DEFAULT_REGION"]
        )
        s3.create_bucket(
            Bucket=STATE_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": self.env["AWS_DEFAULT_REGION"]},
        )

    def _blocks(self) -> None:
        from blocks.bootstrap import bootstrap

        bootstrap(dict(os.environ))
        self._save_backend(TF_BACKEND_BLOCK, f"bench/{self.run_id}/")

    def backend(self, section: str) -> str:
        """A TerraformBackend block of its own for one comparison: each keeps its stack's state under its
        own key (the comparisons name their stacks differently, and one state holding another's names
        would plan a replacement, which the stack's policies deny). Returns the block's name."""
        return self._save_backend(f"{TF_BACKEND_BLOCK}-{section}", f"bench/{self.run_id}/{section}/")

    def _save_backend(self, name: str, key_prefix: str) -> str:
        from blocks import TerraformBackend

        TerraformBackend(
            bucket=STATE_BUCKET,
            region=self.env["AWS_DEFAULT_REGION"],
            key_prefix=key_prefix,
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            lock_timeout_seconds=30,
        ).save(name, overwrite=True)
        return name

    def stop(self) -> None:
        for pid in reversed(self.pids):
            stop_pid(pid, "bench service", seconds=20)
        self.pids.clear()
        if self._pg is not None:
            from devenv import scale_out

            scale_out.stop_postgres(self._pg)
        shutil.rmtree(self.home, ignore_errors=True)
