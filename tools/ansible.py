"""Ansible through the `ansible-runner` CLI, started by the one process runner (`tools.process.run`).

Why the CLI and not `ansible_runner.run()` in-process: the Python API runs ansible-playbook under pexpect
inside our process, outside `tools.process`, so a cancel depends on its `cancel_callback` being polled and
on pexpect's own kill. Through the CLI the whole tree is ours to stop:

    tools.process.run ─ ansible-runner run (own session)      SIGINT -> its handler cancels the job
                         └ ansible-playbook (pexpect session) ansible-runner SIGKILLs this whole group
                            └ forks, modules, ssh clients

`ansible-runner` installs its SIGINT/SIGTERM handler in its main thread, so the SIGINT our runner sends
makes it kill ansible-playbook's process group. If it was killed first (SIGKILL after the grace), the
orphaned group would survive; `_kill_leftovers` therefore sweeps every process that still carries this
run's private data directory in its environment (ansible-runner exports it to all its descendants).
The integration test proves no process is left.

Events: `-j` prints each job event as one JSON line on stdout while it happens; `on_event` receives it and
its `stdout` (redacted) goes to the logger, which is the playbook's normal output. After the run the
recap, the failing tasks and the changes are parsed from the same events (`tools.ansible_results`).

Secrets: before the run, every value the vault password decrypts in the playbook's variable files is
registered for redaction (`tools.ansible_vault`). The vault password is written to a 0600 file inside
a 0700 temporary private data dir and only its path is given to Ansible (`ANSIBLE_VAULT_PASSWORD_FILE`);
extra vars must not look secret (`tools.ansible_inputs`). The runner records argv and environment under
`artifacts/`, so the whole directory is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tools.ansible_inputs import (
    LIMIT_PATTERN,
    PATH_MAX,
    PATH_PATTERN,
    TAGS_PATTERN,
    check_extra_vars,
    check_limit,
    check_tags,
    inventory_hosts,
    resolve_input_file,
)
from tools.ansible_results import HostFailure, HostRecap, PlaybookResult, TaskChange, parse_events
from tools.ansible_vault import register_vault_values
from tools.errors import AnsibleRunFailed, InvalidInput
from tools.process import BASE_ENV, default_logger, run
from tools.redact import redact, register_secret
from tools.settings import INFRA_DIR
from tools.stopping import StopPolicy, escalating

ANSIBLE_DIR = INFRA_DIR / "ansible"
PDD_PREFIX = "devops-ansible-"
DEFAULT_STOP = escalating(interrupt=10, terminate=5)  # ansible-runner cancels its job on SIGINT
# What Ansible may take from the worker's environment: its own settings, the SSH agent, and where the
# Docker engine is (the docker modules of plays on the local host read it), nothing else.
ANSIBLE_ENV = (
    *BASE_ENV,
    "ANSIBLE_*",
    "SSH_AUTH_SOCK",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
)
EventHandler = Callable[[dict[str, Any]], None]

__all__ = [
    "ANSIBLE_DIR",
    "HostFailure",
    "HostRecap",
    "PlaybookResult",
    "PlaybookSpec",
    "TaskChange",
    "check_extra_vars",
    "list_hosts",
    "parse_events",
    "resolve_path",
    "run_playbook",
    "validate_spec",
]


class PlaybookSpec(BaseModel):
    """A playbook run, validated by `validate_spec` before anything starts."""

    playbook: str = Field(default="internal_hosts.yml", max_length=PATH_MAX, pattern=PATH_PATTERN)
    inventory: str = Field(default="inventory.ini", max_length=PATH_MAX, pattern=PATH_PATTERN)
    limit: str | None = Field(default=None, max_length=256, pattern=LIMIT_PATTERN)
    tags: str | None = Field(default=None, max_length=2048, pattern=TAGS_PATTERN)
    check: bool = False
    diff: bool = False
    forks: int = Field(default=5, ge=1, le=100)
    extra_vars: dict[str, Any] = Field(default_factory=dict)


def resolve_path(value: str, what: str, base: Path = ANSIBLE_DIR) -> Path:
    """An existing regular, non-executable file under an allowed root (see tools.ansible_inputs)."""
    return resolve_input_file(value, what, base)


def list_hosts(inventory: Path, pattern: str = "all") -> list[str]:
    """Hosts of `inventory` that match `pattern`, parsed in this process (no process is started)."""
    return inventory_hosts(inventory, pattern)


def validate_spec(spec: PlaybookSpec, *, project_dir: Path = ANSIBLE_DIR) -> tuple[Path, Path, list[str]]:
    """Check everything before a side effect, starting no process. Returns (playbook, inventory, hosts)."""
    if spec.forks < 1 or spec.forks > 100:
        raise InvalidInput(f"forks must be between 1 and 100, got {spec.forks}")
    check_limit(spec.limit)
    check_tags(spec.tags)
    check_extra_vars(spec.extra_vars)
    playbook = resolve_path(spec.playbook, "playbook", project_dir)
    inventory = resolve_path(spec.inventory, "inventory", project_dir)
    everyone = list_hosts(inventory, "all")
    if not everyone:
        raise InvalidInput(f"inventory {inventory} has no hosts")
    matched = list_hosts(inventory, spec.limit) if spec.limit else everyone
    if not matched:
        raise InvalidInput(
            f"limit {spec.limit!r} matches no host of {inventory}; hosts are: {', '.join(everyone)}"
        )
    return playbook, inventory, matched


def build_argv(spec: PlaybookSpec, pdd: Path, ident: str, playbook: Path, inventory: Path) -> list[str]:
    """The ansible-runner command line (no secret on it: the vault password file is given by environment)."""
    argv = [
        _bin("ansible-runner"),
        "run",
        str(pdd),
        "--project-dir",
        str(playbook.parent),
        "-p",
        playbook.name,
        "--inventory",
        str(inventory),
        "--ident",
        ident,
        "--forks",
        str(spec.forks),
        "-j",
    ]
    if spec.limit:
        argv += ["--limit", spec.limit]
    extra: list[str] = []
    if spec.check:
        extra.append("--check")
    if spec.diff:
        extra.append("--diff")
    if spec.tags:
        extra += ["--tags", spec.tags]
    if extra:
        argv.append("--cmdline=" + shlex.join(extra))
    return argv


def _private_data_dir(
    pdd: Path, spec: PlaybookSpec, vault_password: str | None, project_dir: Path
) -> dict[str, str]:
    """Fill ansible-runner's private data dir (0700: the vault password file 0600, the extra vars);
    returns the run's environment."""
    os.chmod(pdd, 0o700)
    env = base_env(project_dir)
    env["ANSIBLE_LOCAL_TEMP"] = str(pdd / "tmp")
    env["DEVOPS_ANSIBLE_RUN"] = str(pdd)  # marks every descendant for the leftover sweep
    if vault_password:
        vault_file = pdd / "vault-password"
        fd = os.open(vault_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(vault_password + "\n")
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_file)
    if spec.extra_vars:
        (pdd / "env").mkdir(mode=0o700)
        (pdd / "env" / "extravars").write_text(json.dumps(spec.extra_vars))
    return env


def run_playbook(
    spec: PlaybookSpec,
    *,
    vault_password: str | None = None,
    project_dir: Path = ANSIBLE_DIR,
    should_cancel: Callable[[], bool] | None = None,
    on_event: EventHandler | None = None,
    timeout: float | None = 3600,
    stop: StopPolicy = DEFAULT_STOP,
    logger=None,  # noqa: ANN001 - logging.Logger or Prefect's adapter
) -> PlaybookResult:
    """Validate `spec`, run the playbook, return its parsed result. Does not raise on host failures
    (call `raise_for_failures`); raises InvalidInput before any side effect, ProcessCancelled/Timeout."""
    log = logger or default_logger()
    playbook, inventory, _ = validate_spec(spec, project_dir=project_dir)
    if vault_password:
        register_secret(vault_password)
        register_vault_values(playbook.parent, inventory, vault_password)
    pdd = Path(tempfile.mkdtemp(prefix=PDD_PREFIX))
    ident = uuid.uuid4().hex[:12]
    events: list[dict[str, Any]] = []
    try:
        env = _private_data_dir(pdd, spec, vault_password, project_dir)
        lock = threading.Lock()

        def handle_line(stream: str, line: str) -> None:
            event = _parse_event(line) if stream == "stdout" else None
            if event is None:
                if line.strip():
                    log.info("%s", line)
                return
            with lock:
                events.append(event)
            text = redact(str(event.get("stdout") or "")).replace("\r\n", "\n").strip("\n")
            if text:
                level = 30 if event.get("event") in ("runner_on_failed", "runner_on_unreachable") else 20
                log.log(level, "%s", text)
            if on_event is not None:
                on_event(event)

        try:
            result = run(
                build_argv(spec, pdd, ident, playbook, inventory),
                cwd=playbook.parent,
                env=env,
                timeout=timeout,
                should_cancel=should_cancel,
                stop=stop,
                inherit=ANSIBLE_ENV,
                logger=log,
                on_line=handle_line,
                log_line=lambda stream, line: False,
                check=False,
                error=AnsibleRunFailed,
                what="ansible-runner",
            )
        finally:
            _kill_leftovers(pdd)
        artifact = pdd / "artifacts" / ident
        recorded = _read_job_events(artifact / "job_events")
        status = _read_text(artifact / "status") or "unknown"
        parsed = parse_events(recorded or events)
        tail = [line for line in result.tail if not line.startswith("{")]
        tail += [
            redact(str(e.get("stdout") or "")).replace("\r\n", "\n")
            for e in (recorded or events)[-12:]
            if e.get("stdout")
        ]
        return PlaybookResult(
            playbook=spec.playbook,
            check=spec.check,
            exit_code=result.exit_code,
            status=status,
            tail=[redact(t) for t in tail][-40:],
            **parsed,
        )
    finally:
        shutil.rmtree(pdd, ignore_errors=True)


def _parse_event(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _read_job_events(directory: Path) -> list[dict[str, Any]]:
    events = []
    if directory.is_dir():
        for path in directory.glob("*.json"):
            try:
                events.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    return sorted(events, key=lambda e: e.get("counter", 0))


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _bin(name: str) -> str:
    """The executable next to the running Python (the project's venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def base_env(project_dir: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    env = {
        "PATH": venv_bin + (os.pathsep + path if path else ""),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    }
    if (project_dir / "ansible.cfg").exists():
        env["ANSIBLE_CONFIG"] = str(project_dir / "ansible.cfg")
    return env


def processes_of_run(pdd: Path) -> list[int]:
    """PIDs whose environment carries this run's private data dir (every descendant of the run)."""
    marker = f"DEVOPS_ANSIBLE_RUN={pdd}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _kill_leftovers(pdd: Path) -> None:
    for pid in processes_of_run(pdd):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
