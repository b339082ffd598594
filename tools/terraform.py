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
`apply_direct` plans and applies in one `apply -auto-approve -json` (its messages read by
tools/terraform_stream.py), for a change no person or policy must see first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, Terraform

from tools.errors import InvalidInput, TerraformError, ToolError
from tools.process import ProcessResult, which
from tools.redact import register_secret
from tools.terraform_lock import (
    HolderRecord,
    LockInfo,
    TerraformProcess,
    holder_key,
    live_terraform_processes,
    lock_from_json,
    parse_lock_info,
    record_from_json,
    stale_lock_reason,
    state_writers,
    this_holder,
)
from tools.terraform_plan import (
    AttributeChange,
    OutputValue,
    PlanSummary,
    ResourceChange,
    Workspace,
    error_blocks,
    summarize_plan,
)
from tools.terraform_runner import TERRAFORM_ENV, Deadlines, Runner, cli_env
from tools.terraform_stream import ApplyStream
from tools.terraform_workspace import (
    TERRAFORM_DIR,
    VAR_FILE,
    backend_config,
    check_variables,
    declared_variables,
    list_stacks,
    prepare_workspace,
    remove_workspace,
    resolve_stack,
    sensitive_outputs,
    sweep_workspaces,
)

PLAN_FILE = "devops.tfplan"
PLAN_JSON = "devops.plan.json"  # `show -json` of the saved plan, kept beside it for the policies

__all__ = [
    "TERRAFORM_DIR",
    "TERRAFORM_ENV",
    "VAR_FILE",
    "ApplyStream",
    "AttributeChange",
    "Deadlines",
    "HolderRecord",
    "LockInfo",
    "OutputValue",
    "TerraformProcess",
    "PlanSummary",
    "ResourceChange",
    "Runner",
    "Workspace",
    "apply",
    "apply_direct",
    "apply_refresh_only",
    "backend_config",
    "check_variables",
    "cli_env",
    "command",
    "declared_variables",
    "destroy",
    "error_blocks",
    "force_unlock",
    "holder_key",
    "import_resource",
    "init",
    "live_terraform_processes",
    "lock_from_json",
    "list_stacks",
    "outputs",
    "parse_lock_info",
    "plan",
    "plan_json",
    "prepare_workspace",
    "record_from_json",
    "remove_workspace",
    "resolve_stack",
    "save_plan_json",
    "sensitive_outputs",
    "show_plan",
    "slug",
    "stale_lock_reason",
    "state_writers",
    "summarize_plan",
    "sweep_workspaces",
    "this_holder",
]


def slug(stack: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")


# --- commands ----------------------------------------------------------------------------------


def command(cmd: str, *args: str, **options: Any) -> list[str]:
    """argv for a Terraform sub-command, built by python-terraform (`-no-color`, `-input=false` always)."""
    tf = Terraform(terraform_bin_path=which("terraform", hint="install Terraform >= 1.10 (scripts/setup)"))
    options.setdefault("no_color", IsFlagged)
    return [str(a) for a in tf.generate_cmd_string(cmd, *args, **options)]


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
        if (errors_first := _errors_first(exc)) is exc:
            raise
        raise errors_first from exc


def _errors_first(exc: TerraformError) -> TerraformError:
    """A plain TerraformError whose message leads with Terraform's own `Error:` blocks (`exc` itself when
    it is a specific one, e.g. StateLocked, or when the output holds no such block)."""
    if type(exc) is not TerraformError or not (errors := error_blocks(exc.tail)):
        return exc
    return TerraformError(
        "\n".join(errors) + f"\n({exc.message})",
        argv=exc.argv,
        exit_code=exc.exit_code,
        tail=exc.tail,
        hint=exc.hint,
        transient=exc.transient,
    )


def show_plan(runner: Runner) -> dict[str, Any]:
    result = runner(
        command("show", PLAN_FILE, json=IsFlagged),
        "terraform show",
        capture_stdout=True,
        log_line=lambda stream, line: stream == "stderr",
    )
    return _json(result, "terraform show -json")


def save_plan_json(workspace: Workspace, shown: Mapping[str, Any]) -> None:
    """Keep the saved plan's `show -json` in its workspace (0600, like the plan), for `plan_json`."""
    fd = os.open(Path(workspace.path) / PLAN_JSON, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(shown, fh)


def plan_json(workspace: Workspace) -> dict[str, Any]:
    """The `show -json` kept by `save_plan_json`; InvalidInput when the workspace holds none."""
    try:
        return json.loads((Path(workspace.path) / PLAN_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"no readable plan JSON in the workspace of {workspace.stack}: {exc}") from exc


def force_unlock(runner: Runner, lock_id: str) -> ProcessResult:
    """`terraform force-unlock -force ID` (the caller has proved the holder dead)."""
    if not re.match(r"^[A-Za-z0-9-]+$", lock_id or ""):
        raise InvalidInput(f"not a Terraform lock ID: {lock_id!r}")
    return runner(command("force-unlock", lock_id, force=IsFlagged), "terraform force-unlock", writes=True)


def apply(runner: Runner, lock_timeout: int = 30) -> ProcessResult:
    """Apply the saved plan only: no new plan, no approval prompt."""
    argv = command("apply", PLAN_FILE, input=False, lock_timeout=f"{lock_timeout}s")
    return runner(argv, "terraform apply", writes=True)


def apply_direct(runner: Runner, lock_timeout: int = 30) -> ApplyStream:
    """Plan and apply in one process: `apply -auto-approve -json` (for a change no person or policy
    must see first). Returns the stream read from its messages: the planned changes and counts, the
    outputs, the drifted addresses. A failure raises what the saved-plan path raises (StateLocked naming
    the holder; otherwise a TerraformError leading with Terraform's own `Error:` blocks)."""
    argv = command(
        "apply",
        input=False,
        auto_approve=IsFlagged,
        json=IsFlagged,
        var_file=VAR_FILE,
        lock_timeout=f"{lock_timeout}s",
    )
    stream = ApplyStream(runner.logger)
    try:
        runner(
            argv,
            "terraform apply",
            writes=True,
            on_line=stream,
            log_line=lambda stream_name, line: False,  # the stream logs each message's readable text
            error_lines=stream.error_lines,
        )
    except TerraformError as exc:
        if (errors_first := _errors_first(exc)) is exc:
            raise
        raise errors_first from exc
    return stream


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


def import_resource(runner: Runner, address: str, resource_id: str, lock_timeout: int = 30) -> ProcessResult:
    """`terraform import ADDRESS ID`: bring an object that exists in AWS into the state (a state write)."""
    if not re.match(r"^[A-Za-z0-9_.\[\]\"-]+$", address) or not re.match(r"^[A-Za-z0-9_.:/-]+$", resource_id):
        raise InvalidInput(f"not a Terraform address and id: {address!r} {resource_id!r}")
    argv = command(
        "import", address, resource_id, input=False, var_file=VAR_FILE, lock_timeout=f"{lock_timeout}s"
    )
    return runner(argv, f"terraform import {address}", writes=True)


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
