"""Packer: layered var files, `packer validate`, `packer build -machine-readable` and its parser.

The article runs `packer build packer_template.json common.json os/ubuntu-18.04.json mode/build.json
host/xwiki.json`; here the layers common -> os -> mode -> host (-> sandbox) are merged in Python, later
files winning, into one 0600 var file passed with `-var-file`.

Sandbox: Packer's amazon-ebs against moto needs `"communicator": "none"` (nothing to SSH into), and with
no communicator provisioners cannot run ("Upload is not implemented when communicator = 'none'"). When
the merged variables select communicator none, `build()` writes a copy of the template without its
provisioners into the private build directory. The provisioners are exercised with the docker builder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.errors import BakeFailed, InvalidInput, looks_transient
from tools.process import BASE_ENV, ProcessResult, run, which
from tools.settings import INFRA_DIR
from tools.stopping import interrupt_once

PACKER_DIR = INFRA_DIR / "packer"
TEMPLATE = "packer_template.json"
LAYERS = ("os", "mode", "host")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HINT = "see Packer's own message in the output lines above"

__all__ = [
    "Artifact",
    "BuildOutput",
    "MachineLine",
    "ami_name",
    "available",
    "build",
    "content_hash",
    "layer_files",
    "merge_layers",
    "parse_machine_line",
    "validate",
    "write_var_file",
]

# What Packer may take from the worker's environment: its own settings, the AWS SDK's and where the Docker
# engine is (its docker builder), nothing else.
PACKER_ENV = (
    *BASE_ENV,
    "PACKER_*",
    "PKR_*",
    "AWS_*",
    "CHECKPOINT_DISABLE",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
)
# Packer's protocol: one SIGINT makes it clean up (terminate the build instance, delete the temporary key
# pair and security group); a second one would skip that. It gets this long before SIGKILL.
PACKER_STOP = interrupt_once(600)


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


# --- machine-readable output --------------------------------------------------------------------


@dataclass(frozen=True)
class MachineLine:
    timestamp: str
    target: str
    type: str
    data: tuple[str, ...]

    @property
    def text(self) -> str:
        return ",".join(self.data[1:]) if self.type == "ui" else ",".join(self.data)


def _unescape(value: str) -> str:
    return value.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_machine_line(line: str) -> MachineLine | None:
    """`timestamp,target,type,data...` (commas in data escaped as %!(PACKER_COMMA)), or None."""
    parts = line.split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return MachineLine(parts[0], parts[1], parts[2], tuple(_unescape(p) for p in parts[3:]))


@dataclass(frozen=True)
class Artifact:
    builder: str
    id: str

    @property
    def region(self) -> str:
        return self.id.split(":", 1)[0] if ":" in self.id else ""

    @property
    def ami_ids(self) -> list[str]:
        """`eu-central-1:ami-1,eu-west-1:ami-2` -> ['ami-1', 'ami-2']."""
        return [part.split(":", 1)[-1] for part in self.id.split(",") if part]


@dataclass
class BuildOutput:
    artifacts: list[Artifact] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ui: list[str] = field(default_factory=list)

    def feed(self, line: MachineLine) -> None:
        if line.type == "artifact" and len(line.data) >= 3 and line.data[1] == "id":
            self.artifacts.append(Artifact(builder=line.target, id=line.data[2]))
        elif line.type == "error" and line.data:
            self.errors.append(line.data[0])
        elif line.type == "ui" and len(line.data) >= 2:
            self.ui.append(line.text)

    @property
    def ami_ids(self) -> list[str]:
        return [ami for artifact in self.artifacts for ami in artifact.ami_ids]


def _ui_logger(
    out: BuildOutput, on_ui: Callable[[str], None] | None = None
) -> tuple[Callable[[str, str], None], Callable[[str, str], bool]]:
    """on_line feeds the parser; log_line lets only human messages through (re-logged unescaped)."""
    from tools.process import default_logger

    log = default_logger()

    def on_line(stream: str, raw: str) -> None:
        parsed = parse_machine_line(raw) if stream == "stdout" else None
        if parsed is None:
            if raw.strip():
                log.info("%s", raw)
            return
        out.feed(parsed)
        if parsed.type == "ui" and len(parsed.data) >= 2:
            for text in parsed.text.splitlines():
                if text.strip():
                    log.info("%s", text)
                    if on_ui is not None:
                        on_ui(text)

    return on_line, lambda stream, line: False


def _run(
    argv: list[str],
    cwd: Path,
    out: BuildOutput,
    what: str,
    env: Mapping[str, str] | None,
    secret_env: Mapping[str, str] | None,
    timeout: float | None,
    should_cancel: Callable[[], bool] | None,
    on_ui: Callable[[str], None] | None = None,
) -> ProcessResult:
    on_line, log_line = _ui_logger(out, on_ui)
    try:
        return run(
            argv,
            cwd=cwd,
            env={"PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1", **(env or {})},
            inherit=PACKER_ENV,
            secret_env=secret_env,
            stop=PACKER_STOP,
            timeout=timeout,
            should_cancel=should_cancel,
            on_line=on_line,
            log_line=log_line,
            error=BakeFailed,
            what=what,
            hint=_HINT,
        )
    except BakeFailed as exc:
        text = "\n".join([*out.errors, *exc.tail])
        exc.transient = looks_transient(text) and "invalid" not in text.lower()
        if out.errors:
            exc.message = f"{what} failed: {out.errors[-1]}"
        raise


def _prepared_template(template: Path, variables: Mapping[str, str], workdir: Path) -> Path:
    if variables.get("communicator") != "none":
        return template
    data = json.loads(template.read_text())
    if data.pop("provisioners", None) is None:
        return template
    derived = workdir / f"{template.stem}.no-provisioners.json"
    derived.write_text(json.dumps(data, indent=2))
    return derived


def validate(
    variables: Mapping[str, str],
    template: Path | None = None,
    *,
    base: Path = PACKER_DIR,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
) -> None:
    template = template or base / TEMPLATE
    workdir = Path(tempfile.mkdtemp(prefix="devops-packer-"))
    try:
        var_file = write_var_file(variables, workdir)
        argv = [
            which("packer", hint="apt-get install packer"),
            "validate",
            f"-var-file={var_file}",
            str(_prepared_template(template, variables, workdir)),
        ]
        _run(argv, base, BuildOutput(), "packer validate", env, secret_env, 120, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build(
    variables: Mapping[str, str],
    template: Path | None = None,
    *,
    base: Path = PACKER_DIR,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
    should_cancel: Callable[[], bool] | None = None,
    on_ui: Callable[[str], None] | None = None,
) -> BuildOutput:
    """`packer build -machine-readable` with the merged variables; returns the parsed artifacts.

    `on_ui` sees every human message as it arrives (the bake's progress artifact follows them)."""
    template = template or base / TEMPLATE
    workdir = Path(tempfile.mkdtemp(prefix="devops-packer-"))
    out = BuildOutput()
    try:
        var_file = write_var_file(variables, workdir)
        argv = [
            which("packer", hint="apt-get install packer"),
            "build",
            "-machine-readable",
            "-color=false",
            f"-var-file={var_file}",
            str(_prepared_template(template, variables, workdir)),
        ]
        _run(argv, base, out, "packer build", env, secret_env, timeout, should_cancel, on_ui)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not out.artifacts:
        raise BakeFailed("packer build finished without an artifact", tail=out.ui[-40:], hint=_HINT)
    return out


# amazon-ebs steps in the order Packer prints them, with the share of the bake done once they appear
PROGRESS_MARKERS = (
    ("Prevalidating", 10.0),
    ("Found Image ID", 15.0),
    ("Launching a source", 25.0),
    ("Instance ID", 35.0),
    ("Stopping the source", 50.0),
    ("Creating AMI", 60.0),
    ("Waiting for AMI to become ready", 70.0),
    ("Adding tags to AMI", 85.0),
    ("Terminating the source", 90.0),
    ("Cleaning up", 95.0),
)


def progress_of(message: str) -> float | None:
    """The bake's progress (percent) that a Packer UI message marks, or None."""
    for marker, percent in PROGRESS_MARKERS:
        if marker in message:
            return percent
    return None


def git_commit(cwd: Path = PACKER_DIR) -> str:
    """The commit of the infrastructure repository (provenance tag), or "unknown" outside a checkout."""
    try:
        result = run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_stdout=True,
            check=False,
            timeout=30,
            log_line=lambda stream, line: False,
            what="git rev-parse",
        )
    except Exception:  # noqa: BLE001 - provenance must not break a bake
        return "unknown"
    return result.stdout.strip() if result.ok and result.stdout.strip() else "unknown"
