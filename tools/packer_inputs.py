"""Packer's inputs: the layered var files, the provisioners' files and the content hash of a bake.

The article runs `packer build packer_template.json common.json os/ubuntu-18.04.json mode/build.json
host/xwiki.json`; here the layers common -> os -> mode -> host (-> sandbox) are merged in Python, later
files winning, into one 0600 var file passed with `-var-file`. The content hash (template, variables,
provisioners' files, source AMI) names the AMI, so a bake of the same content is reused, not repeated.
No process starts here (tools/packer.py runs Packer).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.errors import InvalidInput
from tools.settings import INFRA_DIR

PACKER_DIR = INFRA_DIR / "packer"
TEMPLATE = "packer_template.json"
LAYERS = ("os", "mode", "host")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

__all__ = [
    "LAYERS",
    "PACKER_DIR",
    "RESERVED",
    "TEMPLATE",
    "ami_name",
    "available",
    "content_hash",
    "layer_files",
    "merge_layers",
    "provisioner_files",
    "write_var_file",
]


def available(kind: str, base: Path = PACKER_DIR) -> list[str]:
    """Valid names of one layer (os, mode, host): the var files under vars/<kind>/."""
    return sorted(p.stem for p in (base / "vars" / kind).glob("*.json"))


def layer_files(
    host: str, os_name: str, mode: str, sandbox: bool = False, base: Path = PACKER_DIR
) -> list[Path]:
    """common -> os -> mode -> host (-> sandbox): the var files in precedence order, or InvalidInput."""
    files = [base / "vars" / "common.json"]
    for kind, name in (("os", os_name), ("mode", mode), ("host", host)):
        valid = available(kind, base)
        if not name or not _NAME.match(name) or name not in valid:
            raise InvalidInput(f"unknown {kind} {name!r}; valid {kind} names: {', '.join(valid) or '(none)'}")
        files.append(base / "vars" / kind / f"{name}.json")
    if sandbox:
        files.append(base / "vars" / "sandbox.json")
    return files


# Set by the bake itself (provenance, dedup, sandbox endpoint): a var file must not set them.
RESERVED = frozenset(
    {"content_hash", "git_commit", "ami_name_suffix", "ec2_endpoint", "mode", "aws_max_retries"}
)


def merge_layers(files: list[Path], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Merge var files, later ones winning; keys starting with `_` are comments. All values as strings."""
    merged: dict[str, str] = {}
    for path in files:
        shown = path.relative_to(path.parents[2]) if len(path.parents) > 2 else path
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{shown}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInput(f"{shown}: a var file must be a JSON object, not {type(data).__name__}")
        reserved = sorted(k for k in data if k in RESERVED)
        if reserved:
            raise InvalidInput(f"{shown}: sets {', '.join(reserved)}, which the bake sets itself")
        merged.update({k: str(v) for k, v in data.items() if not k.startswith("_")})
    merged.update({k: str(v) for k, v in (extra or {}).items()})
    return merged


def write_var_file(variables: Mapping[str, str], directory: Path) -> Path:
    path = directory / "variables.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(variables), fh, indent=2, sort_keys=True)
    return path


def provisioner_files(
    template: Mapping[str, Any], variables: Mapping[str, str], base: Path = PACKER_DIR
) -> list[Path]:
    """Files the provisioners use: ansible-local's playbook_dir (whole tree), scripts, uploaded files."""
    found: list[Path] = []
    for prov in template.get("provisioners") or []:
        for key in (
            "playbook_dir",
            "role_paths",
            "script",
            "scripts",
            "source",
            "playbook_file",
            "inventory_file",
        ):
            values = prov.get(key)
            for value in values if isinstance(values, list) else [values]:
                if not isinstance(value, str) or not value:
                    continue
                value = re.sub(
                    r"\{\{\s*user\s+`([^`]+)`\s*\}\}", lambda m: variables.get(m.group(1), ""), value
                )
                path = (base / value).resolve()
                if path.is_dir():
                    found += sorted(p for p in path.rglob("*") if p.is_file())
                elif path.is_file():
                    found.append(path)
    return sorted(set(found))


_HASH_EXCLUDED = {
    "content_hash",
    "git_commit",
    "build_number",
    "ec2_endpoint",
    "ami_name_suffix",
    "aws_max_retries",
}


def ami_name(variables: Mapping[str, str], digest: str) -> str:
    """`<hostname>_<os_name>_<hash[:12]>`: one name per content. The template has no force_deregister
    (a bake never deregisters an AMI, which may be in use): an AMI of that name is the same content, reused
    (or, left untagged by an interrupted bake, adopted) instead of baked again."""
    return f"{variables.get('hostname')}_{variables.get('os_name')}_{digest[:12]}"


def content_hash(
    template_path: Path, variables: Mapping[str, str], source_ami: str, base: Path = PACKER_DIR
) -> str:
    """sha256 over the template, the layered variables, the provisioners' files and the source AMI id."""
    digest = hashlib.sha256()
    raw = template_path.read_bytes()
    digest.update(b"template\0" + raw)
    relevant = {k: v for k, v in sorted(variables.items()) if k not in _HASH_EXCLUDED}
    digest.update(b"vars\0" + json.dumps(relevant, sort_keys=True).encode())
    for path in provisioner_files(json.loads(raw), variables, base):
        digest.update(f"file\0{path.relative_to(base) if path.is_relative_to(base) else path}\0".encode())
        digest.update(path.read_bytes())
    digest.update(b"source\0" + source_ami.encode())
    return digest.hexdigest()
