"""Real SSH targets for Ansible tests: Debian's openssh-server on loopback ports, key auth only.

Each `SshServer` is one sshd with its own host key, config and port; the client key pair and a
known_hosts file live in the test's directory (StrictHostKeyChecking=no writes to that file, never to
~/.ssh). Several "hosts" are several servers on this machine: give each its own `target_root`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@dataclass
class SshServer:
    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self, authorized_key: Path, deadline: float = 30) -> SshServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        host_key = self.directory / "host_key"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        shutil.copy(authorized_key.with_suffix(".pub"), self.directory / "authorized_keys")
        config = self.directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.directory / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "MaxStartups 50",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        log = open(self.directory / "sshd.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited:\n" + (self.directory / "sshd.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"sshd on port {self.port} did not answer within {deadline}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


def ssh_host_line(name: str, port: int, key: Path, known_hosts: Path, target_root: Path, **extra: str) -> str:
    """One inventory.ini line for an SSH target on this machine."""
    args = f"-o StrictHostKeyChecking=no -o UserKnownHostsFile={known_hosts}"
    fields = [
        name,
        "ansible_host=127.0.0.1",
        f"ansible_port={port}",
        "ansible_user=root",
        f"ansible_ssh_private_key_file={key}",
        f"ansible_ssh_common_args='{args}'",
        "ansible_python_interpreter=/usr/bin/python3",
        f"target_root={target_root}",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    return " ".join(fields)


def flow_run_artifacts(flow_run_id) -> list:
    """Every artifact a flow run created (tables and markdown), read back from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def wait_http_ok(url: str, seconds: float = 60) -> str:
    """GET `url` until it answers 200 (a fresh container needs a moment to listen); returns the body."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            with opener.open(url, timeout=3) as response:
                if response.status == 200:
                    return response.read().decode()
        except OSError as exc:  # refused, reset, timeout: not listening yet
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {seconds}s: {last}")
