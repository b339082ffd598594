"""The end-of-session check: no tool process and no labelled container a test session started is left.

`python -m tests.leftovers SESSION_TMP [SESSION_ID]` (scripts/test runs it after both pytest phases).
scripts/test gives each session its own TMPDIR (`mktemp -d`) and exports it: every tool our wrappers start
inherits it (TMPDIR is in the process runner's base environment) and Terraform runs in a workspace under
it. A leftover is a live tool process (terraform, its providers, packer, its plugins, ansible-playbook,
ansible-runner) whose environment holds `TMPDIR=SESSION_TMP` or whose working directory is under it, or a
container carrying the session's test label (tests/conftest.py's TEST_LABEL; the session removes those by
label at its end, so one still there escaped that clean-up). The sandbox's own services (dockerd, moto,
the registry, Prefect servers) are not tools and are never counted.

Stragglers get DEVOPS_LEFTOVER_WAIT seconds (default 60) to exit; what is still there then is printed
(pid, argv, cwd) and the exit code is 1.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("terraform", "packer", "ansible-playbook", "ansible-runner")
PLUGIN_PREFIXES = ("terraform-provider-", "packer-plugin-")
LABEL_PREFIX = "devops-flows.test"


@dataclass(frozen=True)
class Leftover:
    pid: int
    argv: list[str]
    cwd: str

    def __str__(self) -> str:
        return f"pid {self.pid} cwd {self.cwd}: {' '.join(self.argv)}"


def is_tool(argv: list[str]) -> bool:
    """A tool by argv[0], or by argv[1] for an interpreter running a tool's script (ansible-playbook)."""
    for arg in argv[:2]:
        name = Path(arg).name
        if name in TOOLS or name.startswith(PLUGIN_PREFIXES):
            return True
    return False


def _alive(entry: Path) -> bool:
    try:
        return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def tool_processes(session_tmp: str | Path, proc: Path = Path("/proc")) -> list[Leftover]:
    """Live tool processes tied to the session: its TMPDIR in their environment, or their cwd under it."""
    tmp = str(Path(session_tmp).resolve())
    marker = f"TMPDIR={tmp}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if not argv or not is_tool(argv) or not _alive(entry):
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            environ = []
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = "?"
        in_tmp = cwd.removesuffix(" (deleted)") == tmp or cwd.startswith(tmp + "/")
        if marker in environ or in_tmp:
            found.append(Leftover(int(entry.name), argv, cwd))
    return found


def labelled_containers(session: str) -> list[str]:
    """Containers (any state) carrying a test label of this session: `name id (labels)`."""
    if not session:
        return []
    try:
        import docker

        from tools.settings import load_env

        host = load_env().get("DOCKER_HOST") or os.environ.get("DOCKER_HOST")
        if not host:
            return []
        client = docker.DockerClient(base_url=host, timeout=30)
    except Exception as exc:  # noqa: BLE001 - no engine: nothing of ours can run on it
        print(f"leftovers: docker engine not checked ({exc})", file=sys.stderr)
        return []
    prefix = f"{LABEL_PREFIX}.{session}"
    try:
        return [
            f"container {c.name} {c.short_id} ({c.status})"
            for c in client.containers.list(all=True)
            if any(key == prefix or key.startswith(prefix + ".") for key in (c.labels or {}))
        ]
    finally:
        client.close()


def check(session_tmp: str | Path, session: str = "", wait: float | None = None) -> list[str]:
    """What is still left after up to `wait` seconds (default DEVOPS_LEFTOVER_WAIT, 60): [] when clean."""
    if wait is None:
        wait = float(os.environ.get("DEVOPS_LEFTOVER_WAIT", "60"))
    end = time.monotonic() + wait
    while True:
        left = [str(p) for p in tool_processes(session_tmp)] + labelled_containers(session)
        if not left or time.monotonic() >= end:
            return left
        time.sleep(1)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.leftovers SESSION_TMP [SESSION_ID]", file=sys.stderr)
        return 2
    left = check(argv[0], argv[1] if len(argv) > 1 else "")
    if left:
        print("test: leftovers of this test session (tool processes / labelled containers):", file=sys.stderr)
        for line in left:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
