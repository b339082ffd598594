"""Where a stack runs: the stacks under infra/terraform, their S3 backend configuration, and the private
workspaces (a copy of the stacks tree per run, so runs never share `.terraform/` or plan files).

A workspace is `<temp dir>/devops-tf-ws-XXXX/` with an owner file (`owner.json`: the host identity, pid
and start time of the process that made it). A run killed with SIGKILL cannot delete its workspace;
`sweep_workspaces` deletes those whose owner is provably dead (same process table, process gone, no live
process working in it) and that are older than a minute. No Prefect here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tools.errors import InvalidInput
from tools.identity import ProcessRef, pid_alive, pids_working_in, this_host, this_process
from tools.settings import INFRA_DIR
from tools.terraform_plan import Workspace

__all__ = [
    "TERRAFORM_DIR",
    "WORKSPACE_PREFIX",
    "backend_config",
    "check_variables",
    "declared_variables",
    "list_stacks",
    "prepare_workspace",
    "remove_workspace",
    "resolve_stack",
    "sensitive_outputs",
    "sweep_workspaces",
    "write_variables",
]

TERRAFORM_DIR = INFRA_DIR / "terraform"
VAR_FILE = "devops.tfvars.json"
WORKSPACE_PREFIX = "devops-tf-ws-"
OWNER_FILE = "owner.json"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_STACK_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VARIABLE = re.compile(r'^\s*variable\s+"([^"]+)"', re.MULTILINE)
_OUTPUT = re.compile(r'^\s*output\s+"([^"]+)"\s*\{', re.MULTILINE)
_SENSITIVE = re.compile(r"^\s*sensitive\s*=\s*true\b", re.MULTILINE)


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


def sensitive_outputs(stack_dir: Path) -> list[str]:
    """The outputs the stack's .tf files declare `sensitive = true` (read from the text: each `output`
    block up to its closing brace)."""
    found: list[str] = []
    for tf in sorted(stack_dir.glob("*.tf")):
        text = tf.read_text()
        for match in _OUTPUT.finditer(text):
            depth, end = 1, match.end()
            while depth and end < len(text):
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            if _SENSITIVE.search(text[match.end() : end]):
                found.append(match.group(1))
    return found


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
    write the variables to a 0600 JSON var file there, and the owner file at its root."""
    stack_dir = resolve_stack(stack, base)
    check_variables(stack_dir, variables or {})
    root = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
    (root / OWNER_FILE).write_text(this_process().model_dump_json())
    shutil.copytree(
        base, root / "terraform", ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan")
    )
    path = root / "terraform" / stack_dir.relative_to(base)
    workspace = Workspace(
        stack=stack_dir.relative_to(base).as_posix(), root=str(root), path=str(path), state_key=state_key
    )
    write_variables(workspace, variables)
    return workspace


def write_variables(workspace: Workspace, variables: Mapping[str, str] | None) -> None:
    """(Re)write the workspace's 0600 JSON var file."""
    fd = os.open(Path(workspace.path) / VAR_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(variables or {}), fh)


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


def remove_workspace(workspace: Workspace) -> None:
    shutil.rmtree(workspace.root, ignore_errors=True)


def dead_owner(root: Path, min_age_seconds: float = 60) -> str | None:
    """Why the workspace at `root` belongs to a dead run, or None when it may be in use (or is not ours)."""
    try:
        owner = ProcessRef.model_validate_json((root / OWNER_FILE).read_text())
        age = time.time() - (root / OWNER_FILE).stat().st_mtime
    except (OSError, ValueError):
        return None
    if age < min_age_seconds or not this_host().same_process_table(owner.identity):
        return None
    if pid_alive(owner.pid, owner.start) or pids_working_in(root):
        return None
    return f"its owner (pid {owner.pid}) is dead and no process works in it ({age:.0f}s old)"


def sweep_workspaces(tmp: Path | None = None, min_age_seconds: float = 60) -> dict[str, str]:
    """Delete the workspaces of dead runs; returns each deleted path with the reason."""
    removed: dict[str, str] = {}
    for root in sorted(Path(tmp or tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*")):
        reason = dead_owner(root, min_age_seconds) if root.is_dir() and not root.is_symlink() else None
        if reason:
            shutil.rmtree(root, ignore_errors=True)
            removed[str(root)] = reason
    return removed
