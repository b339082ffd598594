"""Values decrypted from the Ansible vault, registered for redaction before a playbook runs.

Ansible decrypts vaulted variables inside its own process; a task that prints one (a failed module's
message, a diff, a debug) would put the plaintext into our logs, where only registered values are masked.
So before the run, the vault files the playbook uses are decrypted here with Ansible's own library
(`VaultLib`, the same code and password the run uses) and every decrypted string is registered:

    group_vars/ and host_vars/ next to the playbook and next to the inventory (files and directories),
    roles/*/vars and roles/*/defaults of the project
    whole-file vaults ($ANSIBLE_VAULT header): every string value of the decrypted YAML
    inline `!vault |` values: the decrypted value

A file that does not decrypt with the password is skipped (the run itself then fails with Ansible's own
"Decryption failed" message). No process is started.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.parsing.vault import VaultLib, VaultSecret

from tools.redact import register_secret

HEADER = "$ANSIBLE_VAULT"
MAX_FILE_BYTES = 1 << 20
_SUFFIXES = {"", ".yml", ".yaml", ".json"}

__all__ = ["decrypted_values", "register_vault_values", "vault_files"]


class _Vaulted(str):
    """The ciphertext of an inline `!vault` value."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!vault", lambda loader, node: _Vaulted(loader.construct_scalar(node)))
_Loader.add_constructor("!unsafe", lambda loader, node: str(loader.construct_scalar(node)))


def vault_files(project_dir: Path, inventory: Path | None = None) -> list[Path]:
    """Variable files the playbook may load that contain vaulted data."""
    bases = {project_dir.resolve()}
    if inventory is not None:
        bases.add(inventory.resolve().parent)
    candidates: list[Path] = []
    for base in bases:
        for name in ("group_vars", "host_vars"):
            candidates += _files_under(base / name)
        for role in sorted((base / "roles").glob("*")) if (base / "roles").is_dir() else []:
            candidates += _files_under(role / "vars") + _files_under(role / "defaults")
    found = []
    for path in dict.fromkeys(candidates):
        try:
            if path.stat().st_size <= MAX_FILE_BYTES and HEADER in path.read_text(errors="replace"):
                found.append(path)
        except OSError:
            continue
    return found


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)


def decrypted_values(files: Iterable[Path], password: str) -> Iterator[str]:
    """Every string decrypted from `files` with `password` (files that do not decrypt are skipped)."""
    vault = VaultLib([("default", VaultSecret(password.encode()))])
    for path in files:
        try:
            text = path.read_text()
            if text.lstrip().startswith(HEADER):
                plain = vault.decrypt(text.encode()).decode(errors="replace")
                yield plain
                yield from _strings(yaml.load(plain, Loader=_Loader), vault)  # noqa: S506 - SafeLoader subclass
            else:
                yield from _strings(yaml.load(text, Loader=_Loader), vault, only_vaulted=True)  # noqa: S506
        except (OSError, ValueError, yaml.YAMLError, AnsibleError, UnicodeDecodeError):
            continue


def _strings(data: Any, vault: VaultLib, only_vaulted: bool = False) -> Iterator[str]:
    if isinstance(data, _Vaulted):
        try:
            yield vault.decrypt(str(data).encode()).decode(errors="replace")
        except (AnsibleError, ValueError):
            return
    elif isinstance(data, dict):
        for value in data.values():
            yield from _strings(value, vault, only_vaulted)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value, vault, only_vaulted)
    elif isinstance(data, str) and not only_vaulted:
        yield data


def register_vault_values(project_dir: Path, inventory: Path | None, password: str) -> int:
    """Register every value the vault password decrypts in the playbook's variable files; returns how many."""
    count = 0
    for value in decrypted_values(vault_files(project_dir, inventory), password):
        value = value.strip("\n")
        if value:
            register_secret(value)
            count += 1
    return count
