"""Validation of a playbook run's inputs, done in this process before any process starts.

    paths        playbook and inventory: non-empty, bounded, existing regular non-executable files under an
                 allowed root (the project dir, infra/ansible by default, plus `DEVOPS_ANSIBLE_ROOTS`)
    limit, tags  bounded patterns (also declared on the parameter models, so the UI and the API reject them)
    extra vars   plain names, no `ansible_*` connection/privilege variables or Ansible's magic variables,
                 no Jinja (`{{`, `{%`, `{#`) in any key or value at any depth, nothing secret-looking
    hosts        the inventory is parsed with Ansible's own library in this process (only the ini, yaml
                 and toml plugins: no inventory script, no plugin inventory) and the limit is matched there

Ansible is imported here at module import on purpose: its import runs `ldconfig -p` once (ctypes looks up
libc), and that must not happen inside a validation that promises to start no process.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ansible.constants as C  # noqa: N812 - Ansible's own name for its settings
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader

from tools.errors import InvalidInput

PATH_MAX = 200
PATH_PATTERN = r"^[A-Za-z0-9_./-]{1,200}$"
LIMIT_PATTERN = r"^[A-Za-z0-9_*!&\[][A-Za-z0-9_.*?:,!&\[\]-]{0,255}$"
TAGS_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(,[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}){0,31}$"
VAR_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ROOTS_ENV = "DEVOPS_ANSIBLE_ROOTS"
INVENTORY_PLUGINS = ["ini", "yaml", "toml"]

SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|(^|[_.-])pass($|[_.-])|pwd|secret|token|credential|private_?key|api_?key"
    r"|(^|[_.-])keys?($|[_.-])",
    re.IGNORECASE,
)
JINJA = re.compile(r"\{\{|\{%|\{#")
# Magic and special variables an extra var must not override (connection and privilege ones are ansible_*).
RESERVED_VARS = frozenset(
    {
        "hostvars",
        "groups",
        "group_names",
        "inventory_hostname",
        "inventory_hostname_short",
        "inventory_dir",
        "inventory_file",
        "playbook_dir",
        "role_path",
        "omit",
        "vars",
        "environment",
        "play_hosts",
        "lookup",
        "query",
    }
)
_SETTINGS_LOCK = threading.Lock()
MAX_DEPTH = 6
MAX_VALUE = 4096
MAX_ITEMS = 200

__all__ = [
    "LIMIT_PATTERN",
    "PATH_PATTERN",
    "TAGS_PATTERN",
    "VAR_NAME_PATTERN",
    "allowed_roots",
    "check_extra_vars",
    "check_limit",
    "check_tags",
    "inventory_hosts",
    "resolve_input_file",
]


def allowed_roots(project_dir: Path) -> list[Path]:
    """The project dir plus the roots listed in $DEVOPS_ANSIBLE_ROOTS (os.pathsep-separated, absolute)."""
    roots = [project_dir.resolve()]
    for item in os.environ.get(ROOTS_ENV, "").split(os.pathsep):
        if item and Path(item).is_absolute():
            roots.append(Path(item).resolve())
    return roots


def resolve_input_file(value: str, what: str, project_dir: Path) -> Path:
    """`value` (relative to `project_dir`, or absolute) as an existing regular, non-executable file under
    an allowed root. Rejects the empty string, overlong or odd paths before touching the file system."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must name a file under {project_dir}; got an empty value")
    if len(value) > PATH_MAX or not re.fullmatch(PATH_PATTERN, value):
        raise InvalidInput(
            f"{what} must be a path of at most {PATH_MAX} characters from [A-Za-z0-9_./-], got {value[:80]!r}"
        )
    path = Path(value)
    path = (path if path.is_absolute() else project_dir / path).resolve()
    roots = allowed_roots(project_dir)
    if not any(path.is_relative_to(root) for root in roots):
        raise InvalidInput(
            f"{what} {value!r} is outside the Ansible root; give a path relative to {project_dir} "
            f"(allowed roots: {', '.join(map(str, roots))})"
        )
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidInput(
            f"{what} {value!r} does not exist (looked at {path}); give a path relative to {project_dir}"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"{what} {value!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{what} {value!r} is not a regular file; give a file relative to {project_dir}")
    if info.st_mode & 0o111:
        raise InvalidInput(
            f"{what} {value!r} is executable; an executable inventory is a script Ansible would run: "
            "give a static ini/yaml file (mode 0644)"
        )
    return path


def check_limit(limit: str | None) -> None:
    if limit is not None and not re.fullmatch(LIMIT_PATTERN, limit):
        raise InvalidInput(
            "limit must be an Ansible host pattern without spaces, '@', '~' or shell characters "
            f"(pattern {LIMIT_PATTERN}), got {limit[:80]!r}"
        )


def check_tags(tags: str | None) -> None:
    if tags is not None and not re.fullmatch(TAGS_PATTERN, tags):
        raise InvalidInput(f"tags must be comma-separated names (letters, digits, _ . -), got {tags[:80]!r}")


def check_extra_vars(extra_vars: Mapping[str, Any]) -> None:
    """Reject extra vars that could change how or as whom Ansible connects, run code, or carry a secret."""
    if not isinstance(extra_vars, Mapping):
        raise InvalidInput("extra vars must be a mapping of names to values")
    for key in extra_vars:
        if not isinstance(key, str) or not re.fullmatch(VAR_NAME_PATTERN, key):
            raise InvalidInput(f"extra var names must match {VAR_NAME_PATTERN}, got {key!r}")
        if key.lower().startswith("ansible_") or key in RESERVED_VARS:
            raise InvalidInput(
                f"extra var {key!r} is reserved: ansible_* connection/privilege variables and Ansible's "
                "magic variables are set by the inventory, never by a flow parameter"
            )
    _check_tree(extra_vars, "", 0)


def _check_tree(value: Any, name: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"extra var {name!r} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            raise InvalidInput(f"extra var {name or 'mapping'!r} has more than {MAX_ITEMS} entries")
        for key, item in value.items():
            if not isinstance(key, str) or not key or len(key) > 128:
                raise InvalidInput(f"extra var names must be non-empty strings up to 128 chars, got {key!r}")
            path = f"{name}.{key}" if name else key
            if JINJA.search(key):
                raise InvalidInput(f"extra var name {path!r} contains Jinja ({{{{, {{%, {{#}}); not allowed")
            if SECRET_NAME.search(key):
                raise InvalidInput(
                    f"extra var {path!r} looks like a secret (password/secret/token/key): put secrets in "
                    "vaulted host_vars or group_vars; extra vars are recorded in plain text"
                )
            _check_tree(item, path, depth + 1)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise InvalidInput(f"extra var {name!r} has more than {MAX_ITEMS} items")
        for index, item in enumerate(value):
            _check_tree(item, f"{name}[{index}]", depth + 1)
    elif isinstance(value, str):
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"extra var {name!r} is longer than {MAX_VALUE} characters")
        if JINJA.search(value):
            raise InvalidInput(
                f"extra var {name!r} contains Jinja ({{{{, {{%, {{#}}): Ansible would template it "
                "(lookups run commands on the worker); give a plain value"
            )
    elif value is not None and not isinstance(value, bool | int | float):
        raise InvalidInput(f"extra var {name!r} must be JSON data, got {type(value).__name__}")


def inventory_hosts(inventory: Path, pattern: str = "all") -> list[str]:
    """Hosts of a static inventory matching `pattern`, parsed in this process (no process is started)."""
    with _SETTINGS_LOCK:
        enabled, mismatch = C.INVENTORY_ENABLED, C.HOST_PATTERN_MISMATCH
        C.INVENTORY_ENABLED, C.HOST_PATTERN_MISMATCH = INVENTORY_PLUGINS, "ignore"
        try:
            return _hosts(inventory, pattern)
        finally:
            C.INVENTORY_ENABLED, C.HOST_PATTERN_MISMATCH = enabled, mismatch


def _hosts(inventory: Path, pattern: str) -> list[str]:
    try:
        manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)], parse=False)
        manager.parse_sources(cache=False)
        return [host.name for host in manager.get_hosts(pattern)]
    except Exception as exc:  # noqa: BLE001 - Ansible's parse errors come in many types
        raise InvalidInput(
            f"inventory {inventory} cannot be parsed as a static ini/yaml inventory: {exc}"
        ) from None
