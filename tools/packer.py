"""Packer: `packer validate`, `packer build -machine-readable` and its parser. Its inputs (the layered
var file, the content hash) are tools/packer_inputs.py's, re-exported here.

Sandbox: Packer's amazon-ebs against moto needs `"communicator": "none"` (nothing to SSH into), and with
no communicator provisioners cannot run ("Upload is not implemented when communicator = 'none'"). When
the merged variables select communicator none, `build()` writes a copy of the template without its
provisioners into the private build directory. The provisioners are exercised with the docker builder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import BakeFailed, looks_transient
from tools.packer_inputs import (
    LAYERS,
    PACKER_DIR,
    RESERVED,
    TEMPLATE,
    ami_name,
    available,
    content_hash,
    layer_files,
    merge_layers,
    provisioner_files,
    write_var_file,
)
from tools.process import BASE_ENV, ProcessResult, run, which
from tools.stopping import interrupt_once

_HINT = "see Packer's own message in the output lines above"

__all__ = [
    "LAYERS",
    "PACKER_DIR",
    "RESERVED",
    "TEMPLATE",
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
    "provisioner_files",
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
