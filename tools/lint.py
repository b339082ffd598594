"""The checks that run before any change, each a wrapper of its tool through the one process runner:
`terraform validate` (in a workspace initialised without a backend: no state is read), `ansible-playbook
--syntax-check` and `ansible-lint` on a playbook, `hadolint` on a Dockerfile. Each returns the tool's
findings (empty: passed); PreflightFailed is the caller's to raise, with those findings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tools.errors import ToolError
from tools.process import default_logger, run

TOOL_TIMEOUT = 300


def venv_tool(name: str) -> str:
    """The executable next to the running Python (the project's venv), else the name (PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def version_of(argv: list[str]) -> str:
    """The first line a tool prints for its version (part of a check's fingerprint)."""
    try:
        result = run(
            argv,
            env={"CHECKPOINT_DISABLE": "1"},  # terraform: no version check over the network
            capture_stdout=True,
            check=False,
            timeout=60,
            log_line=lambda stream, line: False,
        )
    except ToolError:
        return "unknown"
    lines = [line for line in (result.stdout or "\n".join(result.tail)).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def _findings(result, keep) -> list[str]:  # noqa: ANN001 - a ProcessResult and a line filter
    return [line for line in result.tail if line.strip() and keep(line)]


def hadolint(dockerfile: Path, config: Path | None = None) -> list[str]:
    """hadolint's findings (warnings and errors) on the Dockerfile; its own config file when given."""
    argv = [venv_tool("hadolint"), "--no-color", "--failure-threshold", "warning"]
    if config is not None and config.is_file():
        argv += ["--config", str(config)]
    result = run([*argv, str(dockerfile)], check=False, timeout=TOOL_TIMEOUT, what="hadolint")
    return [] if result.exit_code == 0 else _findings(result, lambda line: True)


def ansible_syntax_check(
    playbook: Path, inventory: Path, project_dir: Path, env: dict[str, str]
) -> list[str]:
    argv = [venv_tool("ansible-playbook"), "--syntax-check", "-i", str(inventory), str(playbook)]
    result = run(
        argv, cwd=project_dir, env=env, check=False, timeout=TOOL_TIMEOUT, what="ansible syntax-check"
    )
    return [] if result.exit_code == 0 else _findings(result, lambda line: "WARNING" not in line)


def ansible_lint(playbook: Path, project_dir: Path, env: dict[str, str]) -> list[str]:
    """ansible-lint (offline, the project's `.ansible-lint` config) on the playbook and its roles."""
    argv = [venv_tool("ansible-lint"), "--offline", "--nocolor", "-f", "pep8", str(playbook)]
    result = run(argv, cwd=project_dir, env=env, check=False, timeout=TOOL_TIMEOUT, what="ansible-lint")
    if result.exit_code == 0:
        return []
    return _findings(result, lambda line: ":" in line and "WARNING" not in line) or result.tail[-10:]


def terraform_validate(runner) -> list[str]:  # noqa: ANN001 - a tools.terraform Runner
    """`terraform init -backend=false` and `terraform validate -json` in the runner's workspace: no state
    is read and no provider is configured, so it needs no credentials."""
    from python_terraform import IsFlagged

    from tools.terraform import command

    runner(command("init", input=False, backend=False), "terraform init -backend=false")
    result = runner(
        command("validate", json=IsFlagged),
        "terraform validate",
        capture_stdout=True,
        ok_codes=(0, 1),
        log_line=lambda stream, line: stream == "stderr",
    )
    return terraform_diagnostics(result.stdout)


def terraform_diagnostics(stdout: str) -> list[str]:
    """Error and warning lines of `terraform validate -json`."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return [stdout.strip()[:500]] if stdout.strip() else []
    found = []
    for item in report.get("diagnostics") or []:
        where = item.get("range") or {}
        place = f"{where.get('filename', '?')}:{(where.get('start') or {}).get('line', '?')}" if where else ""
        if item.get("severity") == "error":
            found.append(f"{place}: {item.get('summary', '')}: {item.get('detail', '')}".strip(": "))
    if not report.get("valid", True) and not found:
        found.append("terraform validate: the configuration is not valid")
    default_logger().debug("terraform validate: %d finding(s)", len(found))
    return found
