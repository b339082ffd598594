"""The release pipeline's typed models: parameters (each with `check()`, raising InvalidInput
before any side effect) and results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from blocks import APP_SECRETS_BLOCK, DOCKER_HOST_BLOCK, NOTIFY_BLOCK, REGISTRY_BLOCK
from tools import docker_engine as engine
from tools import sbt
from tools.errors import InvalidInput

Environment = Literal["dev", "staging", "prod"]
HealthSource = Literal["auto", "docker", "http", "running", "none"]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
DEFAULT_BASE_IMAGE = "devops-flows/busybox:1"
# The builder's defaults and build.sbt's name and version, as flows read them in their parameters' checks.
DEFAULT_BUILDER_IMAGE = sbt.DEFAULT_BUILDER_IMAGE
DEFAULT_BUILD_COMMAND = sbt.DEFAULT_BUILD_COMMAND
DEFAULT_CACHE_VOLUME = sbt.DEFAULT_CACHE_VOLUME
read_sbt_project = sbt.read_project


# --- parameter models -----------------------------------------------------------------------------------
def _check_env(env: dict[str, str], what: str) -> None:
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise InvalidInput(
                f"{what}: environment variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*"
            )


def _check_labels(labels: dict[str, str]) -> None:
    for key in labels:
        if not key or any(c.isspace() for c in key):
            raise InvalidInput(f"label key {key!r} must be non-empty without whitespace")


def _check_workspace(path: str) -> Path:
    workspace = Path(path).expanduser()
    if not workspace.is_dir():
        raise InvalidInput(f"app_path {path!r} is not a directory; give the app's work-tree (with build.sbt)")
    return workspace.resolve()


class BuildOptions(BaseModel):
    """How the app is built: the builder, its command and limits (the release form's `build` section)."""

    builder_image: str = Field(
        default=sbt.DEFAULT_BUILDER_IMAGE,
        title="Builder image",
        description="Image with sbt; the stand-in builder in the sandbox.",
    )
    build_command: list[str] = Field(
        default_factory=lambda: list(sbt.DEFAULT_BUILD_COMMAND),
        title="Build command",
        description="Command run in the builder, workspace at /src.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        title="Build environment",
        description="Non-secret variables for the build (PROJECT_VERSION is added).",
    )
    cache_volume: str = Field(
        default=sbt.DEFAULT_CACHE_VOLUME,
        title="Dependency cache volume",
        description="Named volume prefix for /root/.ivy2 and /root/.cache/coursier, kept between builds.",
    )
    cpus: float = Field(
        default=1.0, title="CPUs", description="CPU limit of the builder container (nano_cpus)."
    )
    memory: str = Field(
        default="2g", title="Memory", description="Memory limit of the builder container, e.g. 2g."
    )
    timeout_seconds: int = Field(
        default=1800, title="Timeout", description="The build is stopped after this many seconds."
    )


class BuildParams(BuildOptions):
    """Parameters of build-app: sbt in a builder container, then the universal zip unpacked."""

    app_path: str = Field(
        title="App work-tree", description="Folder with build.sbt and build.sh (the Jenkins WORKSPACE)."
    )
    app_secrets_block: str | None = Field(
        default=APP_SECRETS_BLOCK,
        title="App secrets block",
        description="AppSecrets block whose values the build sees; empty for none.",
    )
    docker_host_block: str = Field(
        default=DOCKER_HOST_BLOCK,
        title="Docker host block",
        description="DockerHost block of the engine that runs the builder.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, title="Container labels", description="Extra labels on the builder container."
    )

    def check(self) -> Path:
        workspace = _check_workspace(self.app_path)
        if not self.build_command:
            raise InvalidInput("build_command must not be empty")
        if not 0 < self.cpus <= 64:
            raise InvalidInput(f"cpus must be in (0, 64], got {self.cpus}")
        if not re.fullmatch(r"[0-9]+[bkmg]?", self.memory.lower()):
            raise InvalidInput(f"memory {self.memory!r} must look like 512m or 2g")
        if self.timeout_seconds < 1:
            raise InvalidInput("timeout_seconds must be >= 1")
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", self.cache_volume):
            raise InvalidInput(
                f"cache_volume {self.cache_volume!r} must be a volume name [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )
        _check_env(self.env, "env")
        _check_labels(self.labels)
        return workspace


class PublishOptions(BaseModel):
    """Where and how the image goes: repository, tags, base image, push retries (the release form's
    `publish` section)."""

    image_repository: str | None = Field(
        default=None,
        title="Image repository",
        description="Path in the registry (no host), e.g. hire-help; default: the sbt name.",
        examples=["hire-help"],
    )
    extra_tags: list[str] = Field(
        default_factory=list, title="Extra tags", description="More tags, e.g. latest."
    )
    base_image: str = Field(
        default=DEFAULT_BASE_IMAGE, title="Base image", description="BASE_IMAGE build arg of the Dockerfile."
    )
    push_retries: int = Field(
        default=3,
        title="Push retries",
        description="Retries (with backoff) for transient registry errors only.",
    )
    retry_delay_seconds: float = Field(
        default=2.0, title="First retry delay", description="Doubles at each retry."
    )


class PublishParams(PublishOptions):
    """Parameters of publish-image: `docker build` of the app image, then push with the registry block."""

    app_path: str = Field(
        title="App work-tree", description="Folder with the app's Dockerfile, after build-app."
    )
    environment: Environment = Field(
        default="dev", title="Environment", description="Also an image tag (the article's :dev)."
    )
    docker_host_block: str = Field(
        default=DOCKER_HOST_BLOCK, title="Docker host block", description="Engine that builds and pushes."
    )
    registry_block: str = Field(
        default=REGISTRY_BLOCK, title="Registry block", description="DockerRegistryCredentials block."
    )
    inputs_tag: str | None = Field(
        default=None,
        title="Build inputs tag",
        description="Also tag the image inputs-<digest of its build inputs> (set by release).",
        pattern=r"^inputs-[0-9a-f]{40}$",
    )

    def check(self) -> Path:
        workspace = _check_workspace(self.app_path)
        if not (workspace / "Dockerfile").is_file():
            raise InvalidInput(f"{workspace}/Dockerfile not found; the app folder must hold its Dockerfile")
        if self.image_repository is not None:
            engine.validate_image_path(self.image_repository)
        for tag in self.extra_tags:
            engine.validate_tag(tag)
        if not 0 <= self.push_retries <= 10:
            raise InvalidInput("push_retries must be between 0 and 10")
        if self.retry_delay_seconds < 0:
            raise InvalidInput("retry_delay_seconds must be >= 0")
        return workspace


class PortMapping(BaseModel):
    """One published port (the article's `-p 10000:10000`)."""

    container_port: int = Field(title="Container port", description="Port inside the container (1-65535).")
    host_port: int = Field(title="Host port", description="Port on the Docker host (1-65535).")
    host_ip: str = Field(
        default="127.0.0.1",
        title="Host IP",
        description="Address to bind on the host: 127.0.0.1 (default) keeps it local, 0.0.0.0 publishes it.",
    )
    protocol: Literal["tcp", "udp"] = Field(default="tcp", title="Protocol")

    def check(self) -> None:
        for label, port in (("container_port", self.container_port), ("host_port", self.host_port)):
            if not 1 <= port <= 65535:
                raise InvalidInput(f"{label} {port} is out of range: ports are 1-65535")
        if not re.fullmatch(r"[0-9a-fA-F.:]+", self.host_ip):
            raise InvalidInput(f"host_ip {self.host_ip!r} must be an IP address")

    def docker_key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


class HealthCheck(BaseModel):
    """How deploy-app decides the new container is healthy."""

    source: HealthSource = Field(
        default="auto",
        title="Health source",
        description="auto: the image's HEALTHCHECK if it has one, else the URL, else 'running'.",
    )
    url: str | None = Field(
        default=None, title="Health URL", description="HTTP GET target, e.g. http://127.0.0.1:10000/health."
    )
    timeout_seconds: int = Field(default=120, title="Deadline", description="Seconds to wait for healthy.")
    interval_seconds: float = Field(default=1.0, title="Interval", description="Seconds between checks.")

    def check(self) -> None:
        if self.source == "http" and not self.url:
            raise InvalidInput("health source 'http' needs a url")
        if self.url and not re.match(r"^https?://", self.url):
            raise InvalidInput(f"health url {self.url!r} must start with http:// or https://")
        if self.timeout_seconds < 1 or self.interval_seconds <= 0:
            raise InvalidInput("health timeout_seconds must be >= 1 and interval_seconds > 0")


class DeployOptions(BaseModel):
    """How the container runs: ports, environment, command, health check (the release form's `deploy`
    section)."""

    ports: list[PortMapping] = Field(default_factory=list, title="Published ports")
    env: dict[str, str] = Field(
        default_factory=dict, title="Environment", description="Non-secret runtime variables."
    )
    command: list[str] | None = Field(
        default=None, title="Command", description="Override the image's command."
    )
    health: HealthCheck = Field(default_factory=HealthCheck, title="Health check")
    force_redeploy: bool = Field(
        default=False,
        title="Replace even if up to date",
        description="Replace the container even when it already runs this image with this configuration.",
    )


class DeployParams(DeployOptions):
    """Parameters of deploy-app: replace the container named app_name with the image pinned by digest."""

    app_name: str = Field(
        title="Container name",
        description="Exact container name (the article's APP_NAME).",
        examples=["hire-help-dev"],
    )
    image_reference: str = Field(
        title="Image", description="repository@sha256:... as publish-image returned it."
    )
    environment: Environment = Field(
        default="dev", title="Environment", description="Set as PROJECT_ENV in the container."
    )
    app_secrets_block: str | None = Field(
        default=APP_SECRETS_BLOCK,
        title="App secrets block",
        description="AppSecrets block passed as environment; empty for none.",
    )
    docker_host_block: str = Field(
        default=DOCKER_HOST_BLOCK,
        title="Docker host block",
        description="Engine to deploy on (unix://, tcp:// or ssh:// in the block).",
    )
    registry_block: str | None = Field(
        default=REGISTRY_BLOCK, title="Registry block", description="Credentials for the pull."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, title="Labels", description="Extra container labels."
    )
    notify_block: str | None = Field(
        default=NOTIFY_BLOCK,
        title="Notification block",
        description="Where 'app down' goes when the previous container cannot be restored; empty: none.",
    )

    def check(self) -> None:
        if not _CONTAINER_NAME.fullmatch(self.app_name) or ".." in self.app_name:
            raise InvalidInput(
                f"app_name {self.app_name!r} must be 1-128 of [a-zA-Z0-9_.-], starting with a letter or "
                "digit, without '..'"
            )
        engine.split_reference(self.image_reference)
        for port in self.ports:
            port.check()
        keys = [p.docker_key() for p in self.ports]
        if len(set(keys)) != len(keys):
            raise InvalidInput(f"a container port is published twice: {keys}")
        _check_env(self.env, "env")
        _check_labels(self.labels)
        self.health.check()


# --- results --------------------------------------------------------------------------------------------
class BuildResult(BaseModel):
    name: str
    version: str
    workspace: str
    archive: str
    package_dir: str
    builder_image: str


class ImageRef(BaseModel):
    repository: str
    tags: list[str]
    digest: str
    reference: str = Field(description="repository@sha256:..., what deploy-app pulls")
    image_id: str


class HealthResult(BaseModel):
    healthy: bool
    source: str
    detail: str
    checks: int
    seconds: float


class DeployResult(BaseModel):
    app_name: str
    container_id: str
    image_reference: str
    ports: list[str]
    health: HealthResult
    replaced: list[str] = Field(default_factory=list, description="ids of the containers removed")
    unchanged: bool = Field(default=False, description="the container already ran this image and config")
