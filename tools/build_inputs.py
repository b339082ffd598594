"""What an app's image is made of, as one digest: when the digest is unchanged, the image a build would make
is the one already in the registry (tagged `inputs-<digest>`), so release skips build and push.

The digest covers every file of the work-tree (path, executable bit, content) except what the build
writes (`target/`, the unpacked package folder) and version-control data, plus the facts given by the
caller: builder image id, build command and environment, base image id. Secrets are not hashed (a
digest of a secret in a public tag would let anyone test guesses); a change of secret values alone needs
`force_build`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# Written by the build or by tools around it, never an input.
SKIPPED_DIRS = frozenset(
    {".git", ".hg", ".svn", "target", ".bsp", ".idea", ".metals", ".bloop", "__pycache__"}
)
TAG_PREFIX = "inputs-"
DIGEST_CHARS = 40  # of sha256's 64 hex digits; a tag may have 128 characters


def input_files(workspace: Path, skip: Iterable[str] = ()) -> list[Path]:
    """The work-tree's input files, sorted; `skip` names more top-level entries (the unpacked package)."""
    top_skipped = set(skip)
    found: list[Path] = []
    for root, dirs, files in os.walk(workspace):
        rel_root = Path(root).relative_to(workspace)
        dirs[:] = sorted(
            d for d in dirs if d not in SKIPPED_DIRS and not (rel_root == Path(".") and d in top_skipped)
        )
        found += [Path(root) / f for f in files if not (rel_root == Path(".") and f in top_skipped)]
    return sorted(found)


def digest(workspace: Path, facts: Mapping[str, object], skip: Iterable[str] = ()) -> str:
    """sha256 over the facts (JSON, sorted keys) and every input file's path, mode and content."""
    total = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode())
    for path in input_files(workspace, skip):
        rel = path.relative_to(workspace).as_posix()
        if path.is_symlink():
            entry = f"link:{os.readlink(path)}".encode()
        else:
            content = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    content.update(block)
            entry = f"{os.access(path, os.X_OK):d}:{content.hexdigest()}".encode()
        total.update(rel.encode() + b"\0" + entry + b"\n")
    return total.hexdigest()


def inputs_tag(value: str) -> str:
    """The registry tag that marks the image built from inputs with this digest."""
    return TAG_PREFIX + value[:DIGEST_CHARS]
