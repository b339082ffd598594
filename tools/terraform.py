"""Terraform, driven through python-terraform's command vocabulary and our own process runner.

docs/design.md (python-terraform and our runner): the design card names python-terraform, and we use
it for what it still does well on Terraform 1.11: `Terraform.generate_cmd_string` builds every command
line (flags, `-backend-config=k=v`, `-lock-timeout`, `-out`). We do not let it *run* Terraform: its
`cmd()` captures output instead of streaming it, cannot be cancelled (no process group, no SIGINT, so a
killed flow leaves the S3 state lock behind), passes `-var` values on the command line (visible in `ps`),
treats `plan -detailed-exitcode`'s exit code 2 ("changes present") like an error unless told otherwise,
raises TypeError from `output(name)`, and adds `-force` to `destroy` (rejected since 0.15). So every
command runs through `tools.process.run`: lines stream to the Prefect run logger, secrets (AWS keys) go
in the environment only and are redacted, variables go in a 0600 JSON var file, cancel and our deadline
send SIGINT first so Terraform releases its lock, exit code 2 of `plan` means "changes", a held lock
becomes `StateLocked` naming the holder, and outputs come from `output -json`, parsed into typed models.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from python_terraform import IsFlagged, Terraform

from tools.errors import InvalidInput, StateLocked, TerraformError, ToolError, looks_transient
from tools.process import BASE_ENV, ProcessResult, run, which
from tools.redact import register_secret
from tools.settings import INFRA_DIR
from tools.stopping import StopPolicy, interrupt_once
from tools.terraform_plan import (
    AttributeChange,
    PlanSummary,
    ResourceChange,
    Workspace,
    error_blocks,
    summarize_plan,
)

TERRAFORM_DIR = INFRA_DIR / "terraform"
PLAN_FILE = "devops.tfplan"
VAR_FILE = "devops.tfvars.json"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_STACK_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VARIABLE = re.compile(r'^\s*variable\s+"([^"]+)"', re.MULTILINE)
_HINT = "see Terraform's own message in the output lines above"

__all__ = [
    "AttributeChange",
    "LockInfo",
    "OutputValue",
    "TerraformProcess",
    "PlanSummary",
    "ResourceChange",
    "Runner",
    "Workspace",
    "apply",
    "apply_refresh_only",
    "backend_config",
    "command",
    "declared_variables",
    "destroy",
    "error_blocks",
    "force_unlock",
    "init",
    "live_terraform_processes",
    "lock_from_json",
    "list_stacks",
    "outputs",
    "parse_lock_info",
    "plan",
    "prepare_workspace",
    "resolve_stack",
    "show_plan",
    "slug",
    "stale_lock_reason",
    "summarize_plan",
    "this_holder",
]


# --- models ------------------------------------------------------------------------------------


class OutputValue(BaseModel):
    value: Any = None
    type: Any = None
    sensitive: bool = False


class LockInfo(BaseModel):
    id: str = ""
    path: str = ""
    operation: str = ""
    who: str = ""
    version: str = ""
    created: str = ""

    def describe(self) -> str:
        who, op, since = self.who or "?", self.operation or "?", self.created or "?"
        return f"lock {self.id or '?'} held by {who} ({op} since {since})"


# --- stacks and workspaces ---------------------------------------------------------------------


def list_stacks(base: Path = TERRAFORM_DIR) -> list[str]:
    """Every directory under infra/terraform that holds .tf files, as a relative path."""
    if not base.is_dir():
        return []
    found = {p.parent.relative_to(base).as_posix() for p in base.rglob("*.tf") if ".terraform" not in p.parts}
    return sorted(found)


def resolve_stack(stack: str, base: Path = TERRAFORM_DIR) -> Path:
    """The stack directory for a relative path such as `scalac/internal-prod/xwiki`, or InvalidInput."""
    valid = list_stacks(base)
    parts = (stack or "").strip().strip("/").split("/")
    if not stack or stack.startswith("/") or any(not _STACK_PART.match(p) or p in (".", "..") for p in parts):
        raise InvalidInput(f"invalid stack path {stack!r}; valid stacks: {', '.join(valid) or '(none)'}")
    rel = "/".join(parts)
    if rel not in valid:
        raise InvalidInput(f"unknown stack {stack!r}; valid stacks under infra/terraform: {', '.join(valid)}")
    return base / rel


def declared_variables(stack_dir: Path) -> set[str]:
    return {m for tf in stack_dir.glob("*.tf") for m in _VARIABLE.findall(tf.read_text())}


def check_variables(stack_dir: Path, variables: Mapping[str, str]) -> None:
    declared = declared_variables(stack_dir)
    for name in variables:
        if not _NAME.match(name) or name not in declared:
            raise InvalidInput(
                f"variable {name!r} is not declared by the stack; valid: {', '.join(sorted(declared))}"
            )


def prepare_workspace(
    stack: str, variables: Mapping[str, str] | None, state_key: str, base: Path = TERRAFORM_DIR
) -> Workspace:
    """Copy infra/terraform to a private temp dir (so runs never share `.terraform/` or plan files) and
    write the variables to a 0600 JSON var file there."""
    stack_dir = resolve_stack(stack, base)
    check_variables(stack_dir, variables or {})
    root = Path(tempfile.mkdtemp(prefix="devops-tf-"))
    shutil.copytree(
        base, root / "terraform", ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan")
    )
    path = root / "terraform" / stack_dir.relative_to(base)
    fd = os.open(path / VAR_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(variables or {}), fh)
    return Workspace(
        stack=stack_dir.relative_to(base).as_posix(), root=str(root), path=str(path), state_key=state_key
    )


def remove_workspace(workspace: Workspace) -> None:
    shutil.rmtree(workspace.root, ignore_errors=True)


def cli_env() -> dict[str, str]:
    """TF_CLI_CONFIG_FILE / TF_PLUGIN_CACHE_DIR for Terraform: the environment's when its CLI config exists,
    else the sandbox's (the machine may export a TF_CLI_CONFIG_FILE that does not exist; the sandbox's
    config points at the offline provider mirror)."""
    from tools.settings import load_env

    current = os.environ.get("TF_CLI_CONFIG_FILE", "")
    if current and Path(current).is_file():
        return {}
    sandbox = load_env()
    if sandbox.get("TF_CLI_CONFIG_FILE") and Path(sandbox["TF_CLI_CONFIG_FILE"]).is_file():
        env = {"TF_CLI_CONFIG_FILE": sandbox["TF_CLI_CONFIG_FILE"]}
        if sandbox.get("TF_PLUGIN_CACHE_DIR"):
            Path(sandbox["TF_PLUGIN_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
            env["TF_PLUGIN_CACHE_DIR"] = sandbox["TF_PLUGIN_CACHE_DIR"]
        return env
    return {}


def slug(stack: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")


def backend_config(bucket: str, key: str, region: str, endpoint_url: str | None = None) -> dict[str, str]:
    """`-backend-config` pairs for the S3 backend with native S3 locking (a `.tflock` object)."""
    config = {"bucket": bucket, "key": key, "region": region, "use_lockfile": "true", "encrypt": "true"}
    if endpoint_url:
        config.update(
            {
                "endpoints": f'{{s3="{endpoint_url}"}}',
                "use_path_style": "true",
                "skip_credentials_validation": "true",
                "skip_requesting_account_id": "true",
                "skip_region_validation": "true",
                "skip_metadata_api_check": "true",
                "skip_s3_checksum": "true",
            }
        )
    return config


# --- commands ----------------------------------------------------------------------------------


def command(cmd: str, *args: str, **options: Any) -> list[str]:
    """argv for a Terraform sub-command, built by python-terraform (`-no-color`, `-input=false` always)."""
    tf = Terraform(terraform_bin_path=which("terraform", hint="install Terraform >= 1.10 (scripts/setup)"))
    options.setdefault("no_color", IsFlagged)
    return [str(a) for a in tf.generate_cmd_string(cmd, *args, **options)]


_LOCK_FIELD = re.compile(r"^\s*(ID|Path|Operation|Who|Version|Created):\s*(.*)$")


def parse_lock_info(lines: Iterable[str]) -> LockInfo | None:
    """The `Lock Info:` block of Terraform's "Error acquiring the state lock", or None."""
    lines = list(lines)
    if not any("Error acquiring the state lock" in line for line in lines):
        return None
    info: dict[str, str] = {}
    for line in lines:
        match = _LOCK_FIELD.match(line)
        if match and match.group(1).lower() not in info:
            info[match.group(1).lower()] = match.group(2).strip()
    return LockInfo(**info)


def lock_from_json(raw: str | bytes) -> LockInfo | None:
    """The lock object of Terraform's S3 backend (`<state key>.tflock`: ID, Operation, Who, Created...)."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    fields = set(LockInfo.model_fields)
    return LockInfo(**{k.lower(): str(v) for k, v in data.items() if k.lower() in fields})


def this_holder() -> str:
    """What Terraform writes as `Who` when this process's user on this host takes a lock: user@hostname."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = ""
    return f"{user}@{socket.gethostname()}"


class TerraformProcess(BaseModel):
    pid: int
    cwd: str
    argv: list[str]
    state_key: str | None = Field(None, description="Backend key of its working directory, when readable")


def live_terraform_processes(stack: str, proc: Path = Path("/proc")) -> list[TerraformProcess]:
    """Every live `terraform` process on this host whose working directory is a copy of `stack`
    (`.../<stack>`, e.g. a flow's private workspace or infra/terraform itself). Zombies do not count;
    a process whose directory cannot be read counts (it might be one). Its state key comes from the
    directory's backend (`.terraform/terraform.tfstate`) or, during `init`, from its command line."""
    suffix = "/" + stack.strip("/")
    found = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            if not argv or Path(argv[0]).name != "terraform":
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                continue
        except OSError:
            continue  # gone meanwhile
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = "?"
        if cwd != "?" and not cwd.removesuffix(" (deleted)").endswith(suffix):
            continue
        key = None
        try:
            backend = json.loads((entry / "cwd" / ".terraform" / "terraform.tfstate").read_text())
            key = ((backend.get("backend") or {}).get("config") or {}).get("key")
        except (OSError, ValueError, AttributeError):
            # not initialised yet: an `init` names its key on its command line (-backend-config=key=...)
            key = next((a.split("=", 2)[2] for a in argv if a.startswith("-backend-config=key=")), None)
        found.append(TerraformProcess(pid=int(entry.name), cwd=cwd, argv=argv, state_key=key))
    return found


def stale_lock_reason(lock: LockInfo, stack: str, state_key: str, holder: str | None = None) -> str | None:
    """Why `lock` is provably stale, or None when it may be live. Stale only when it was taken by this
    user on this host (`Who` == user@hostname) and no live terraform process here works on this stack's
    state (a process on the same stack whose backend key cannot be read counts as live)."""
    me = holder or this_holder()
    if not lock.id or lock.who != me:
        return None
    live = [p for p in live_terraform_processes(stack) if p.state_key in (None, state_key)]
    if live:
        return None
    return (
        f"it was taken by {lock.who} (this user on this host) and no terraform process on this host is "
        f"working on {stack} ({state_key}): its holder is dead"
    )


# What Terraform may take from the worker's environment: its own settings and the AWS SDK's (a worker on
# AWS may get its credentials from the environment, e.g. a container role); never anything else.
TERRAFORM_ENV = (*BASE_ENV, "TF_*", "AWS_*", "CHECKPOINT_DISABLE")


@dataclass(frozen=True)
class Deadlines:
    """How long each kind of Terraform command may run, and how long its graceful stop may take after
    the one SIGINT (cancel or deadline) before SIGKILL. Reads (init, plan, show, output) and writes
    (apply, destroy, import, force-unlock) differ: a large apply takes long, and its graceful stop
    finishes the provider calls in flight and writes the state, which must not be cut short."""

    plan_seconds: float = 900
    apply_seconds: float = 3600
    plan_stop_seconds: float = 120
    apply_stop_seconds: float = 900

    def timeout(self, writes: bool) -> float:
        return self.apply_seconds if writes else self.plan_seconds

    def stop(self, writes: bool) -> StopPolicy:
        return interrupt_once(self.apply_stop_seconds if writes else self.plan_stop_seconds)


class Runner:
    """Runs one workspace's commands with the same environment, deadlines and cancel callback."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        deadlines: Deadlines = Deadlines(),
        should_cancel: Callable[[], bool] | None = None,
        logger=None,  # noqa: ANN001
    ) -> None:
        self.workspace = workspace
        self.env = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", **cli_env(), **(env or {})}
        self.secret_env = dict(secret_env or {})
        for value in self.secret_env.values():
            register_secret(value)
        self.deadlines, self.should_cancel, self.logger = deadlines, should_cancel, logger

    def __call__(self, argv: list[str], what: str, writes: bool = False, **kwargs: Any) -> ProcessResult:
        """Run one command; `writes` marks the commands that write state (apply's deadlines)."""
        try:
            return run(
                argv,
                cwd=self.workspace.path,
                env=self.env,
                inherit=TERRAFORM_ENV,
                secret_env=self.secret_env,
                timeout=self.deadlines.timeout(writes),
                stop=self.deadlines.stop(writes),
                should_cancel=self.should_cancel,
                logger=self.logger,
                error=TerraformError,
                what=what,
                hint=_HINT,
                **kwargs,
            )
        except TerraformError as exc:
            lock = parse_lock_info(exc.tail)
            if lock is not None:
                raise StateLocked(
                    f"{what}: the state of {self.workspace.stack} is locked: {lock.describe()}",
                    argv=exc.argv,
                    exit_code=exc.exit_code,
                    tail=exc.tail,
                    hint=f"wait for the holder to finish; if it is dead: terraform force-unlock {lock.id}",
                ) from exc
            if looks_transient("\n".join(exc.tail)):
                exc.transient = True
            raise


def init(runner: Runner, backend: Mapping[str, str], lock_timeout: int = 30) -> ProcessResult:
    argv = command(
        "init",
        input=False,
        backend_config=dict(backend),
        reconfigure=IsFlagged,
        lock_timeout=f"{lock_timeout}s",
    )
    return runner(argv, "terraform init")


def plan(runner: Runner, lock_timeout: int = 30, destroy: bool = False, lock: bool = True) -> bool:
    """`plan -detailed-exitcode -out`; True when there are changes (exit code 2).

    lock=False (`-lock=false`) plans without taking the state lock: for read-only checks (detect-drift)
    that must never make an apply wait or fail; a plan never writes the state. A failed plan raises a
    TerraformError whose message leads with Terraform's own `Error:` blocks."""
    argv = command(
        "plan",
        input=False,
        detailed_exitcode=IsFlagged,
        out=PLAN_FILE,
        var_file=VAR_FILE,
        lock=None if lock else False,
        lock_timeout=f"{lock_timeout}s" if lock else None,
        destroy=IsFlagged if destroy else None,
    )
    try:
        return runner(argv, "terraform plan", ok_codes=(0, 2)).exit_code == 2
    except TerraformError as exc:
        if type(exc) is not TerraformError or not (errors := error_blocks(exc.tail)):
            raise
        raise TerraformError(
            "\n".join(errors) + f"\n({exc.message})",
            argv=exc.argv,
            exit_code=exc.exit_code,
            tail=exc.tail,
            hint=exc.hint,
            transient=exc.transient,
        ) from exc


def show_plan(runner: Runner) -> dict[str, Any]:
    result = runner(
        command("show", PLAN_FILE, json=IsFlagged),
        "terraform show",
        capture_stdout=True,
        log_line=lambda stream, line: stream == "stderr",
    )
    return _json(result, "terraform show -json")


def force_unlock(runner: Runner, lock_id: str) -> ProcessResult:
    """`terraform force-unlock -force ID` (the caller has proved the holder dead)."""
    if not re.match(r"^[A-Za-z0-9-]+$", lock_id or ""):
        raise InvalidInput(f"not a Terraform lock ID: {lock_id!r}")
    return runner(command("force-unlock", lock_id, force=IsFlagged), "terraform force-unlock", writes=True)


def apply(runner: Runner, lock_timeout: int = 30) -> ProcessResult:
    """Apply the saved plan only: no new plan, no approval prompt."""
    argv = command("apply", PLAN_FILE, input=False, lock_timeout=f"{lock_timeout}s")
    return runner(argv, "terraform apply", writes=True)


def apply_refresh_only(runner: Runner, lock_timeout: int = 30) -> ProcessResult:
    """`apply -refresh-only -auto-approve`: save the state refreshed from AWS (and outputs); changes no
    infrastructure, so it needs no approval. For a plan whose only changes are drift or outputs (a saved
    plan of pure drift is not applyable in Terraform 1.11)."""
    argv = command(
        "apply",
        input=False,
        refresh_only=IsFlagged,
        auto_approve=IsFlagged,
        var_file=VAR_FILE,
        lock_timeout=f"{lock_timeout}s",
    )
    return runner(argv, "terraform apply -refresh-only")


def destroy(runner: Runner, lock_timeout: int = 30) -> ProcessResult:
    argv = command(
        "apply",
        input=False,
        destroy=IsFlagged,
        auto_approve=IsFlagged,
        var_file=VAR_FILE,
        lock_timeout=f"{lock_timeout}s",
    )
    return runner(argv, "terraform destroy", writes=True)


def outputs(runner: Runner) -> dict[str, OutputValue]:
    result = runner(
        command("output", json=IsFlagged),
        "terraform output",
        capture_stdout=True,
        log_line=lambda stream, line: stream == "stderr",
    )
    parsed = {
        name: OutputValue.model_validate(raw) for name, raw in _json(result, "terraform output -json").items()
    }
    for out in parsed.values():
        if out.sensitive and isinstance(out.value, str):
            register_secret(out.value)
    return parsed


def _json(result: ProcessResult, what: str) -> dict[str, Any]:
    try:
        return json.loads(result.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ToolError(
            f"{what} printed no JSON: {exc}", argv=result.argv, tail=result.stdout.splitlines()[-40:]
        ) from exc
