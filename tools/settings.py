"""Where the sandbox writes its endpoints and credentials, and how flows and tests read them.

`scripts/sandbox up` writes `KEY=VALUE` lines to `<state>/env` (mode 0600). The block bootstrap turns
them into Prefect blocks; tests read them through `load_env()`. The state directory is
`$DEVOPS_SANDBOX_DIR`, or `.sandbox/` at the repository root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_DIR = REPO_ROOT / "infra"


def state_dir() -> Path:
    return Path(os.environ.get("DEVOPS_SANDBOX_DIR") or REPO_ROOT / ".sandbox").resolve()


def env_file() -> Path:
    return state_dir() / "env"


def load_env(path: Path | None = None) -> dict[str, str]:
    """The sandbox's KEY=VALUE file as a dict (empty when the sandbox never ran)."""
    path = path or env_file()
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH|ACCESS_KEY", re.IGNORECASE)


def public_env(values: dict[str, str] | None = None) -> dict[str, str]:
    """The sandbox values that are not credentials (endpoints, paths): what a long-running process may
    export to its environment. Credentials reach flows through blocks, never through the environment."""
    values = load_env() if values is None else values
    return {k: v for k, v in values.items() if not _SECRET_NAME.search(k)}


def write_env(values: dict[str, str], path: Path | None = None) -> Path:
    path = path or env_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# written by scripts/sandbox up; holds sandbox credentials (0600)\n")
        for key in sorted(values):
            fh.write(f"{key}={values[key]}\n")
    tmp.replace(path)
    return path


def apply_env(values: dict[str, str] | None = None, override: bool = False) -> dict[str, str]:
    """Export the sandbox values into os.environ; what the user set wins unless `override`.

    Tests and the main job override: this machine may export e.g. a TF_CLI_CONFIG_FILE that does not
    exist, and the sandbox's own endpoints must win there."""
    values = load_env() if values is None else values
    for key, value in values.items():
        if override:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
    return values
