"""Shared machinery of the reliability suite: private services, a process-table sampler, side-effect counts.

Private services (moto, registry) are started per test on free ports and stopped by the test; the
shared sandbox is never stopped, paused or restarted.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devenv import services
from tools.settings import load_env

TOOL_NAMES = ("terraform", "packer", "ansible-playbook", "ansible-runner")


# --- /proc ------------------------------------------------------------------------------------------
def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _ppid(pid: int) -> int:
    stat = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


# Tools whose environment the secret scan checks: each may hold only the secrets meant for it.
ENV_TOOLS = ("terraform", "packer", "ansible-playbook", "ansible-runner", "git", "ssh")


def _tool_of(argv: list[str]) -> str | None:
    """The tool a process is (by its argv[0], or argv[1] for an interpreter running a script); a plugin
    counts as its tool."""
    for arg in argv[:2]:
        name = Path(arg).name
        if name.startswith("terraform-provider-"):
            return "terraform"
        if name.startswith("packer-plugin-"):
            return "packer"
        if name in ENV_TOOLS:
            return name
    return None


def tool_env_leaks(
    tool_environs: dict[str, set[str]], tokens: dict[str, str], meant_for: dict[str, set[str]]
) -> tuple[dict[str, str], list[str]]:
    """Every sampled tool environment as a scanned place, and each secret found in the environment of a
    tool it is not meant for (`meant_for`: secret name -> the tools that may hold it)."""
    places: dict[str, str] = {}
    found: list[str] = []
    for tool, environs in sorted(tool_environs.items()):
        for i, environ in enumerate(sorted(environs)):
            places[f"environment of {tool} #{i}"] = environ
            found += [
                f"{what} in the environment of {tool}"
                for what, token in tokens.items()
                if token in environ and tool not in meant_for.get(what, set())
            ]
    return places, sorted(set(found))


def descends_from(pid: int, ancestor: int) -> bool:
    seen = 0
    while pid > 1 and seen < 64:
        if pid == ancestor:
            return True
        pid = _ppid(pid)
        seen += 1
    return pid == ancestor


def processes() -> dict[int, list[str]]:
    """pid -> argv of every process readable now."""
    out: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            raw = _read(entry / "cmdline")
            if raw:
                out[int(entry.name)] = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
    return out


def tool_processes(marker: str | None = None, ancestor: int | None = None) -> dict[int, list[str]]:
    """Running terraform/packer/ansible processes (optionally: argv containing marker / below ancestor)."""
    found = {}
    for pid, argv in processes().items():
        names = {Path(a).name for a in argv[:2]}
        if not names & set(TOOL_NAMES):
            continue
        if marker and not any(marker in a for a in argv):
            continue
        if ancestor and not descends_from(pid, ancestor):
            continue
        found[pid] = argv
    return found


class ProcSampler(threading.Thread):
    """Reads /proc/*/cmdline and /proc/*/environ every `interval` s while running.

    `argvs` collects every distinct command line seen; `tools_seen` the tool processes that descend from
    this test process (to prove that nothing was started); `environ_reads` counts environ reads (environ
    is where secrets legitimately go, so it is read but never required to be clean).
    """

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="proc-sampler")
        self.interval = interval
        self.argvs: set[tuple[str, ...]] = set()
        self.tools_seen: list[list[str]] = []
        self.environ_reads = 0
        self.tool_environs: dict[str, set[str]] = {}  # tool name -> each distinct environment seen
        self.samples = 0
        self._stop_event = threading.Event()
        self._me = os.getpid()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid, argv in processes().items():
                key = tuple(argv)
                if key not in self.argvs:
                    self.argvs.add(key)
                    if {Path(a).name for a in argv[:2]} & set(TOOL_NAMES) and descends_from(pid, self._me):
                        self.tools_seen.append(argv)
                environ = _read(Path(f"/proc/{pid}/environ"))
                if environ:
                    self.environ_reads += 1
                    tool = _tool_of(argv)
                    if tool and descends_from(pid, self._me):
                        self.tool_environs.setdefault(tool, set()).add(environ.decode(errors="replace"))
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> ProcSampler:
        self._stop_event.set()
        self.join(timeout=10)
        return self

    def __enter__(self) -> ProcSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- private services -------------------------------------------------------------------------------
@dataclass
class PrivateMoto:
    """A moto_server of our own on a free port: stop or pause it freely."""

    port: int = 0
    pid: int = 0
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="devops-rel-moto-")))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrivateMoto:
        self.port = self.port or services.free_port()
        self.pid = services.start_moto(self.port, self.logdir / "moto.log", seconds=90)
        return self

    def stop(self) -> None:
        if self.pid:
            self.resume()
            services.stop_pid(self.pid, "private moto", seconds=10)
            self.pid = 0

    def pause(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="eu-central-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@dataclass
class PrivateRegistry:
    """`docker-registry serve` with its own htpasswd (bcrypt, password on htpasswd's stdin) and storage."""

    user: str
    password: str
    port: int = 0
    pid: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="devops-rel-registry-")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> PrivateRegistry:
        assert shutil.which("docker-registry"), "docker-registry is not installed"
        self.port = self.port or services.free_port()
        self.pid = services.start_registry(
            self.root,
            self.port,
            self.user,
            self.password,
            self.root / "registry.log",
            realm="devops-rel",
            log_level="warn",
            delete=False,
        )
        return self

    def stop(self) -> None:
        if self.pid:
            services.stop_pid(self.pid, "private registry", seconds=10)
            self.pid = 0
        shutil.rmtree(self.root, ignore_errors=True)

    def catalog(self) -> list[str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return registry_catalog(self.address, token)


def registry_catalog(address: str, basic_token: str) -> list[str]:
    """Every repository, page by page (`last=` pagination; the registry caps `n`)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    names: list[str] = []
    while True:
        query = "?n=100" + (f"&last={names[-1]}" if names else "")
        request = urllib.request.Request(
            f"http://{address}/v2/_catalog{query}", headers={"Authorization": f"Basic {basic_token}"}
        )
        with opener.open(request, timeout=10) as response:
            page = json.loads(response.read()).get("repositories") or []
        names += page
        if len(page) < 100:
            return names


def sandbox_catalog() -> list[str]:
    env = load_env()
    token = base64.b64encode(
        f"{env['DEVOPS_REGISTRY_USER']}:{env['DEVOPS_REGISTRY_PASSWORD']}".encode()
    ).decode()
    return registry_catalog(env["DEVOPS_REGISTRY"], token)


def diff(before: dict[str, object], after: dict[str, object]) -> dict[str, object]:
    """Only what was ADDED (other helpers' parallel tests may remove things; we must not add)."""
    out = {}
    for key, value in after.items():
        added = sorted(set(value) - set(before.get(key, [])))  # type: ignore[arg-type]
        if added:
            out[key] = added
    return out


# --- Prefect read-back ------------------------------------------------------------------------------
def run_tree(flow_run_id) -> list:
    """The flow run id and every subflow run id below it (any depth)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    ids, frontier = [flow_run_id], [flow_run_id]
    with get_client(sync_client=True) as client:
        while frontier:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            )
            frontier = [c.id for c in children if c.id not in ids]
            ids += frontier
    return ids


def logs_of(flow_run_ids: Iterable) -> list[str]:
    """Every log message (flow and task runs) of the given flow runs, from the API."""
    from tests.conftest import read_flow_run_logs

    out: list[str] = []
    for run_id in flow_run_ids:
        out += read_flow_run_logs(run_id)
    return out


def artifacts_of(flow_run_ids: Iterable) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=list(flow_run_ids)))
        )
    return [f"{a.key} {a.description} {a.data}" for a in found]


def task_run_states_of(flow_run_ids: Iterable) -> list[str]:
    """Task run names and state messages (a failed task's message holds the error text)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(flow_run_ids)))
        )
        flows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(flow_run_ids)))
        )
    return [f"{r.name} {r.state.message if r.state else ''}" for r in runs] + [
        f"{f.name} {f.state.message if f.state else ''} {json.dumps(f.parameters, default=str)}"
        for f in flows
    ]


def wait_for(check, seconds: float, what: str, interval: float = 0.2):
    end = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {seconds:g}s")
        time.sleep(interval)
