"""Remembered passes of slow checks. A pass of a check over exactly these inputs (the files' contents and
the tool's version) is remembered for a day, so a rollout scheduled every two hours pays `terraform
validate` (the AWS provider's schema: several seconds) once per change, not once per run. A failure is
never remembered."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

MAX_AGE_SECONDS = 24 * 3600
SKIP_PARTS = frozenset({".terraform", "__pycache__", ".git"})


def marks_dir() -> Path:
    return Path(os.environ.get("DEVOPS_CHECK_MARKS") or Path.home() / ".cache" / "devops-flows" / "checks")


def fingerprint(kind: str, files: Iterable[Path], *extra: str) -> str:
    """sha256 over the check's kind, each file's path and content (sorted), and `extra` (tool versions)."""
    digest = hashlib.sha256(kind.encode())
    for path in sorted({p for p in files if p.is_file() and not SKIP_PARTS & set(p.parts)}):
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    for part in extra:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def passed_recently(mark: str, max_age: float = MAX_AGE_SECONDS) -> bool:
    try:
        return time.time() - (marks_dir() / mark).stat().st_mtime < max_age
    except OSError:
        return False


def remember_pass(mark: str) -> None:
    path = marks_dir() / mark
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
