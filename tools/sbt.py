"""sbt in Docker, the article's "build phase" without Jenkins.

- `read_project(workspace)`: name and version from `build.sbt` (`version := "x"` or
  `ThisBuild / version := "x"`; exactly one; InvalidInput naming the file otherwise).
- `clean_artifacts(...)`: removes `<name>-<version>/` and `target/` inside the workspace only; a symlink
  is unlinked, never followed.
- `build_in_container(...)`: runs the builder image (workspace at /src, ivy/coursier caches as named
  volumes, env + secret env, CPU/memory limits, deadline); logs stream live (redacted); the container is
  removed in `finally`, also when Prefect's TerminationSignal interrupts the main thread.
- `safe_unzip(...)`: unpacks the universal zip, rejecting entries that escape the destination (zip-slip)
  and symlink entries; keeps the unix permission bits (bin/start.sh stays executable).

No Prefect flow logic here; the logger comes from `tools.process.default_logger()`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from tools.docker_engine import ContainerRun, run_to_completion
from tools.errors import BuildFailed, InvalidInput
from tools.process import run as run_process

DEFAULT_BUILDER_IMAGE = "hseeberger/scala-sbt:8u181_2.12.8_1.2.8"
DEFAULT_BUILD_COMMAND = ["sh", "-c", "cd /src && ./build.sh"]
DEFAULT_CACHE_VOLUME = "devops-flows-sbt-cache"
IVY_PATH = "/root/.ivy2"
COURSIER_PATH = "/root/.cache/coursier"

_VERSION_RE = re.compile(r'^\s*(?:ThisBuild\s*/\s*)?version\s*:=\s*"([^"]*)"', re.MULTILINE)
_NAME_RE = re.compile(r'^\s*(?:ThisBuild\s*/\s*)?name\s*:=\s*"([^"]*)"', re.MULTILINE)
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class SbtProject:
    name: str
    version: str
    build_file: Path

    @property
    def package(self) -> str:
        """`<name>-<version>`: the zip's base name and its top folder."""
        return f"{self.name}-{self.version}"


def parse_version(text: str, source: str = "build.sbt") -> str:
    """The single `version := "x"` (or `ThisBuild / version := "x"`) of a build definition."""
    stripped = re.sub(r"//[^\n]*", "", text)
    found = _VERSION_RE.findall(stripped)
    if not found:
        raise InvalidInput(f'{source}: no version setting; expected one line like version := "1.0.0"')
    if len(set(found)) > 1 or len(found) > 1:
        raise InvalidInput(
            f"{source}: {len(found)} version settings ({', '.join(found)}); expected exactly one"
        )
    version = found[0]
    if not _SAFE_PART.fullmatch(version) or ".." in version:
        raise InvalidInput(f"{source}: version {version!r} must match [A-Za-z0-9][A-Za-z0-9._+-]* (no '..')")
    return version


def parse_name(text: str, default: str, source: str = "build.sbt") -> str:
    stripped = re.sub(r"//[^\n]*", "", text)
    found = _NAME_RE.findall(stripped)
    name = found[0] if len(found) == 1 else default
    if len(found) > 1:
        raise InvalidInput(f"{source}: {len(found)} name settings; expected at most one")
    if not _SAFE_PART.fullmatch(name) or ".." in name:
        raise InvalidInput(f"{source}: project name {name!r} must match [A-Za-z0-9][A-Za-z0-9._+-]*")
    return name


def read_project(workspace: Path) -> SbtProject:
    """Name and version of the sbt project in `workspace` (InvalidInput names the file on error)."""
    build_file = Path(workspace) / "build.sbt"
    if not build_file.is_file():
        raise InvalidInput(f"{build_file}: not found; the workspace must hold an sbt project (build.sbt)")
    text = build_file.read_text()
    return SbtProject(
        name=parse_name(text, default=Path(workspace).resolve().name, source=str(build_file)),
        version=parse_version(text, source=str(build_file)),
        build_file=build_file,
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return path != root


def clean_artifacts(workspace: Path, project: SbtProject) -> list[Path]:
    """Remove `<name>-<version>/` and `target/` of the workspace; never anything outside it."""
    root = Path(workspace).resolve()
    removed: list[Path] = []
    for rel in (project.package, "target"):
        path = root / rel
        if path.is_symlink():
            path.unlink()  # never follow a link, wherever it points
            removed.append(path)
            continue
        if not path.exists():
            continue
        if not _inside(path.resolve(), root):
            raise InvalidInput(f"{path} resolves outside the workspace {root}; refusing to remove it")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


@dataclass
class BuildSpec:
    image: str = DEFAULT_BUILDER_IMAGE
    command: Sequence[str] = tuple(DEFAULT_BUILD_COMMAND)
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    cache_volume: str = DEFAULT_CACHE_VOLUME
    cpus: float = 1.0
    memory: str = "2g"
    timeout: float = 1800.0
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    tmpfs: Mapping[str, str] = field(default_factory=dict)


def builder_run(workspace: Path, spec: BuildSpec) -> ContainerRun:
    """The container the build runs in: workspace at /src, caches kept in named volumes."""
    if spec.cpus <= 0:
        raise InvalidInput(f"cpus must be > 0, got {spec.cpus}")
    return ContainerRun(
        image=spec.image,
        command=list(spec.command),
        working_dir="/src",
        environment={**spec.env, **spec.secret_env},
        secret_names=sorted(spec.secret_env),
        volumes={
            str(Path(workspace).resolve()): {"bind": "/src", "mode": "rw"},
            f"{spec.cache_volume}-ivy2": {"bind": IVY_PATH, "mode": "rw"},
            f"{spec.cache_volume}-coursier": {"bind": COURSIER_PATH, "mode": "rw"},
        },
        nano_cpus=int(spec.cpus * 1_000_000_000),
        mem_limit=spec.memory,
        labels={"devops-flows.role": "builder", **spec.labels},
        name=spec.name,
        tmpfs=dict(spec.tmpfs),
    )


def build_in_container(
    client,  # noqa: ANN001 - docker.DockerClient
    workspace: Path,
    spec: BuildSpec,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    on_started: Callable[[str], None] | None = None,
) -> list[str]:
    """Run the build; return the log tail. BuildFailed (with the tail) on a non-zero exit."""
    result = run_to_completion(
        client, builder_run(workspace, spec), timeout=spec.timeout, logger=logger, on_started=on_started
    )
    if result.exit_code != 0:
        raise BuildFailed(
            f"the build in {spec.image} exited with {result.exit_code}",
            argv=list(spec.command),
            exit_code=result.exit_code,
            tail=result.tail,
            hint=failure_hint(result.exit_code, result.tail),
        )
    return result.tail


def failure_hint(exit_code: int, tail: Sequence[str]) -> str:
    """What a failed build most likely means, from its exit code and last lines."""
    text = "\n".join(tail).lower()
    if "no space left on device" in text or "disk quota exceeded" in text:
        return "the build ran out of disk space ('No space left on device' above): free space or give it more"
    if exit_code == 137:
        return "the builder was killed (SIGKILL): stopped from outside (docker kill/stop) or out of memory"
    if exit_code == 143:
        return "the builder was terminated (SIGTERM) from outside"
    return "read the build's own output above"


def _unix_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def safe_unzip(archive: Path, destination: Path) -> list[Path]:
    """Extract `archive` into `destination`; InvalidInput for any entry escaping it or a symlink."""
    dest = Path(destination).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if not zipfile.is_zipfile(archive):
        raise InvalidInput(f"{archive}: not a zip archive")
    written: list[Path] = []
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # validate every entry before writing anything
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            target = (dest / name).resolve()
            if (
                name.startswith(("/", "\\"))
                or re.match(r"^[A-Za-z]:", name)
                or ".." in parts
                or not (target == dest or _inside(target, dest))
            ):
                raise InvalidInput(
                    f"{archive}: entry {name!r} escapes the destination {dest}; refusing to unpack"
                )
            if stat.S_ISLNK(_unix_mode(info)):
                raise InvalidInput(f"{archive}: entry {name!r} is a symbolic link; refusing to unpack")
        for info in infos:
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = _unix_mode(info) & 0o777
            if mode:
                os.chmod(target, mode)
            written.append(target)
    return written


def package_zip(workspace: Path, project: SbtProject) -> Path:
    """`target/universal/<name>-<version>.zip`, or BuildFailed saying what the build produced."""
    archive = Path(workspace) / "target" / "universal" / f"{project.package}.zip"
    if not archive.is_file():
        found = sorted(p.name for p in archive.parent.glob("*")) if archive.parent.is_dir() else []
        raise BuildFailed(
            f"the build produced no {archive.relative_to(workspace)}",
            tail=[f"target/universal holds: {', '.join(found) or 'nothing'}"],
            hint="the build must run the equivalent of `sbt universal:packageBin`",
        )
    return archive


@dataclass(frozen=True)
class GitHead:
    revision: str
    committed: str  # ISO 8601, UTC


def git_head(workspace: Path) -> GitHead | None:
    """HEAD's commit and its commit time when the workspace is inside a git work-tree (OCI labels)."""
    if not shutil.which("git"):
        return None
    result = run_process(
        ["git", "-C", str(workspace), "log", "-1", "--format=%H %ct"],
        check=False,
        capture_stdout=True,
        timeout=30,
        what="git log",
        log_line=lambda s, line: False,
    )
    match = re.fullmatch(r"([0-9a-f]{40}) (\d+)", result.stdout.strip())
    if not result.ok or not match:
        return None
    committed = datetime.fromtimestamp(int(match.group(2)), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return GitHead(revision=match.group(1), committed=committed)
