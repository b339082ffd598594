"""Keep only the named Ansible collections (and what their MANIFEST.json says they depend on).

The `ansible` package bundles ~100 collections (~470 MB); the project's playbooks use `community.docker`.
Run by images/worker/Dockerfile with the ANSIBLE_COLLECTIONS build argument:

    python prune_collections.py community.docker amazon.aws     # keep these two and their dependencies
    python prune_collections.py                                   # no names: keep everything

Standard library only: it runs inside the image's virtualenv at build time.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def collections_root() -> Path:
    import ansible_collections  # a namespace package: the bundled collections of the `ansible` package

    return Path(next(iter(ansible_collections.__path__)))


def installed(root: Path) -> dict[str, Path]:
    """`namespace.name` -> its directory, for every collection with a MANIFEST.json."""
    return {f"{m.parent.parent.name}.{m.parent.name}": m.parent for m in root.glob("*/*/MANIFEST.json")}


def dependencies(path: Path) -> list[str]:
    manifest = json.loads((path / "MANIFEST.json").read_text())
    return list(manifest.get("collection_info", {}).get("dependencies") or {})


def closure(wanted: list[str], available: dict[str, Path]) -> set[str]:
    """The wanted collections plus their transitive dependencies; an unknown name is an error."""
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise SystemExit(f"unknown Ansible collections: {', '.join(unknown)} (installed: {len(available)})")
    keep: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in keep and name in available:
            keep.add(name)
            todo += dependencies(available[name])
    return keep


def prune(root: Path, keep: set[str]) -> int:
    """Remove every other collection (and namespace directories left empty); returns how many went."""
    available = installed(root)
    gone = [path for name, path in available.items() if name not in keep]
    for path in gone:
        shutil.rmtree(path)
    for namespace in root.iterdir():
        if namespace.is_dir() and not any(p for p in namespace.iterdir() if p.name != "__pycache__"):
            shutil.rmtree(namespace)
    return len(gone)


def main(argv: list[str]) -> int:
    if not argv:
        return 0
    root = collections_root()
    keep = closure(argv, installed(root))
    removed = prune(root, keep)
    print(f"ansible collections: kept {', '.join(sorted(keep))}; removed {removed}")  # noqa: T201 - a command's output
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
