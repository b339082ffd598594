"""Tasks of the release pipeline (build-app, publish-image, deploy-app) and their typed models.

Each task loads the blocks it needs by name, calls `tools.sbt` / `tools.docker_engine`, logs and returns a
small pydantic result. Parameter models carry `check()`, which raises InvalidInput before any side effect.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect_docker import DockerRegistryCredentials
from pydantic import BaseModel, Field

from blocks import APP_SECRETS_BLOCK, DOCKER_HOST_BLOCK, NOTIFY_BLOCK, REGISTRY_BLOCK, AppSecrets
from blocks.docker_host import docker_client, registry_auth
from tools import containers, sbt
from tools import docker_engine as engine
from tools.errors import DeployFailed, InvalidInput, retry_if_transient
from tools.redact import redact

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


class BuildParams(BaseModel):
    """Parameters of build-app: sbt in a builder container, then the universal zip unpacked."""

    app_path: str = Field(
        title="App work-tree", description="Folder with build.sbt and build.sh (the Jenkins WORKSPACE)."
    )
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


class PublishParams(BaseModel):
    """Parameters of publish-image: `docker build` of the app image, then push with the registry block."""

    app_path: str = Field(
        title="App work-tree", description="Folder with the app's Dockerfile, after build-app."
    )
    image_repository: str | None = Field(
        default=None,
        title="Image repository",
        description="Path in the registry (no host), e.g. hire-help; default: the sbt name.",
        examples=["hire-help"],
    )
    environment: Environment = Field(
        default="dev", title="Environment", description="Also an image tag (the article's :dev)."
    )
    extra_tags: list[str] = Field(
        default_factory=list, title="Extra tags", description="More tags, e.g. latest."
    )
    base_image: str = Field(
        default=DEFAULT_BASE_IMAGE, title="Base image", description="BASE_IMAGE build arg of the Dockerfile."
    )
    docker_host_block: str = Field(
        default=DOCKER_HOST_BLOCK, title="Docker host block", description="Engine that builds and pushes."
    )
    registry_block: str = Field(
        default=REGISTRY_BLOCK, title="Registry block", description="DockerRegistryCredentials block."
    )
    push_retries: int = Field(
        default=3,
        title="Push retries",
        description="Retries (with backoff) for transient registry errors only.",
    )
    retry_delay_seconds: float = Field(
        default=2.0, title="First retry delay", description="Doubles at each retry."
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


class DeployParams(BaseModel):
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
    ports: list[PortMapping] = Field(default_factory=list, title="Published ports")
    env: dict[str, str] = Field(
        default_factory=dict, title="Environment", description="Non-secret runtime variables."
    )
    command: list[str] | None = Field(
        default=None, title="Command", description="Override the image's command."
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
    health: HealthCheck = Field(default_factory=HealthCheck, title="Health check")
    labels: dict[str, str] = Field(
        default_factory=dict, title="Labels", description="Extra container labels."
    )
    force_redeploy: bool = Field(
        default=False,
        title="Replace even if up to date",
        description="Replace the container even when it already runs this image with this configuration.",
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


# --- helpers --------------------------------------------------------------------------------------------
def _client(block_name: str, sends_secrets: bool = False):  # noqa: ANN202 - docker.DockerClient
    return docker_client(block_name, sends_secrets=sends_secrets)


def _secrets(block_name: str | None, builder_image: str | None = None) -> dict[str, str]:
    """The AppSecrets values; for a builder, only when the block allows that builder image."""
    if not block_name:
        return {}
    block = AppSecrets.load(block_name)
    if builder_image is not None:
        block.check_builder(builder_image, block_name)
    return block.environment()


# --- build-app ------------------------------------------------------------------------------------------
@task(name="check-builder-secrets")
def check_builder_secrets(params: BuildParams) -> None:
    """Before anything runs: the builder image may receive the AppSecrets block (its allowlist)."""
    if params.app_secrets_block:
        AppSecrets.load(params.app_secrets_block).check_builder(
            params.builder_image, params.app_secrets_block
        )


@task(name="read-sbt-project")
def read_project(workspace: Path) -> sbt.SbtProject:
    """Name and version from build.sbt."""
    project = sbt.read_project(workspace)
    get_run_logger().info("project %s version %s (%s)", project.name, project.version, project.build_file)
    return project


@task(name="clean-artifacts")
def clean_artifacts(workspace: Path, project: sbt.SbtProject) -> list[str]:
    """Remove the previous unpacked package and target/ (inside the workspace only)."""
    removed = [str(p) for p in sbt.clean_artifacts(workspace, project)]
    get_run_logger().info("removed previous artifacts: %s", removed or "none")
    return removed


@task(name="sbt-build")
def run_build(workspace: Path, project: sbt.SbtProject, params: BuildParams) -> Path:
    """Run the build in the builder container; return the universal zip."""
    logger = get_run_logger()
    secret_env = _secrets(params.app_secrets_block, builder_image=params.builder_image)
    spec = sbt.BuildSpec(
        image=params.builder_image,
        command=params.build_command,
        env={**params.env, "PROJECT_VERSION": project.version},
        secret_env=secret_env,
        cache_volume=params.cache_volume,
        cpus=params.cpus,
        memory=params.memory,
        timeout=params.timeout_seconds,
        labels=params.labels,
    )
    client = _client(params.docker_host_block, sends_secrets=bool(secret_env))
    try:
        sbt.build_in_container(
            client,
            workspace,
            spec,
            logger=logger,
            on_started=lambda cid: logger.info("builder container %s", cid[:12]),
        )
    finally:
        client.close()
    archive = sbt.package_zip(workspace, project)
    logger.info("package %s (%d bytes)", archive, archive.stat().st_size)
    return archive


@task(name="unpack-package")
def unpack_package(archive: Path, workspace: Path, project: sbt.SbtProject) -> Path:
    """Unpack the zip into the workspace (zip-slip safe); return `<workspace>/<name>-<version>`."""
    written = sbt.safe_unzip(archive, workspace)
    package_dir = workspace / project.package
    if not package_dir.is_dir():
        raise InvalidInput(
            f"{archive} has no top folder {project.package}/ (found {len(written)} files elsewhere)"
        )
    get_run_logger().info("unpacked %d files into %s", len(written), package_dir)
    return package_dir


# --- publish-image --------------------------------------------------------------------------------------
@task(name="docker-build")
def build_app_image(
    workspace: Path, project: sbt.SbtProject, params: PublishParams, registry_url: str
) -> engine.BuiltImage:
    """Build the app image with OCI labels and its version/environment/extra tags."""
    repository = engine.full_repository(registry_url, params.image_repository or project.name)
    package_dir = workspace / project.package
    if not package_dir.is_dir():
        raise InvalidInput(f"{package_dir} is missing: run build-app on this work-tree first")
    tags = [
        f"{repository}:{t}"
        for t in dict.fromkeys([project.version, params.environment, *params.extra_tags, params.inputs_tag])
        if t
    ]
    labels = {
        "org.opencontainers.image.title": project.name,
        "org.opencontainers.image.version": project.version,
    }
    # Reproducible: `created` is the commit's time (or SOURCE_DATE_EPOCH), never the build's, so an
    # unchanged app hits the layer cache through to the same image and its deploy is left running.
    head = sbt.git_head(workspace)
    if head:
        labels["org.opencontainers.image.revision"] = head.revision
        labels["org.opencontainers.image.created"] = head.committed
    elif os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        created = datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), UTC)
        labels["org.opencontainers.image.created"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    client = _client(params.docker_host_block)
    try:
        return engine.build_image(
            client,
            workspace,
            "Dockerfile",
            tags,
            buildargs={"BASE_IMAGE": params.base_image, "APP_DIR": project.package},
            labels=labels,
            logger=get_run_logger(),
        )
    finally:
        client.close()


@task(name="registry-url")
def registry_url(block_name: str) -> str:
    """The registry host of the credentials block (no secret leaves this task)."""
    return DockerRegistryCredentials.load(block_name).registry_url


@task(name="docker-push", retry_condition_fn=retry_if_transient)
def push_image(built: engine.BuiltImage, docker_host_block: str, registry_block: str) -> ImageRef:
    """Log in (password to the daemon only) and push every tag; return the digest-pinned reference."""
    logger = get_run_logger()
    context = TaskRunContext.get()
    attempt = context.task_run.run_count if context else 1
    repository = built.tags[0].rpartition(":")[0]
    tags = [t.rpartition(":")[2] for t in built.tags]
    logger.info("push attempt %d: %s tags %s", attempt, repository, tags)
    auth = registry_auth(registry_block)
    client = _client(docker_host_block, sends_secrets=True)
    try:
        engine.login(client, auth)
        digest = engine.push(client, repository, tags, auth, logger=logger)
    finally:
        client.close()
    ref = ImageRef(
        repository=repository,
        tags=tags,
        digest=digest,
        reference=f"{repository}@{digest}",
        image_id=built.image_id,
    )
    logger.info("pushed %s", ref.reference)
    return ref


# --- deploy-app -----------------------------------------------------------------------------------------
@task(name="replace-container")
def replace_container(params: DeployParams) -> dict:
    """Pull by digest, set the container named app_name aside (stopped, renamed, image pinned) and run the
    new one detached with its mounts, so named and anonymous volumes carry over.

    A container that already runs this image with this configuration (and is not unhealthy) is left
    alone, as `docker compose up` does, unless force_redeploy. The set-aside container is what
    restore-previous brings back, and what discard-previous removes (volumes kept) once the new one is
    healthy.
    """
    logger = get_run_logger()
    auth = registry_auth(params.registry_block) if params.registry_block else None
    auth = engine.auth_for(params.image_reference, auth)  # credentials go only to their registry
    secret_env = _secrets(params.app_secrets_block)
    client = _client(params.docker_host_block, sends_secrets=bool(auth or secret_env))
    try:
        if auth:
            engine.login(client, auth)
        image_id = engine.pull(client, params.image_reference, auth, logger=logger)
        old = engine.find_exact(client, params.app_name)
        repo, digest = engine.split_reference(params.image_reference)
        spec = engine.ContainerRun(
            image=params.image_reference,
            command=params.command,
            name=params.app_name,
            environment={**params.env, "PROJECT_ENV": params.environment, **secret_env},
            secret_names=sorted(secret_env),
            ports={p.docker_key(): (p.host_ip, p.host_port) for p in params.ports},
            labels={
                "devops-flows.app": params.app_name,
                "devops-flows.image": params.image_reference,
                "devops-flows.environment": params.environment,
                **params.labels,
            },
            restart_policy={"Name": "always"},
        )
        if len(old) == 1 and not params.force_redeploy:
            why = engine.difference(client, old[0], spec, image_id)
            if why is None:
                logger.info(
                    "%s (%s) already runs %s with this configuration: left running (force_redeploy "
                    "replaces it)",
                    params.app_name,
                    old[0].id[:12],
                    digest,
                )
                return {"container_id": old[0].id, "replaced": [], "image_id": image_id, "unchanged": True}
            logger.info("replacing %s (%s): %s", params.app_name, old[0].id[:12], why)
        aside = containers.set_aside(client, params.app_name, logger)
        try:
            container_id = containers.start_new(client, spec, aside.mounts, logger)
        except Exception as exc:
            if aside.previous_id:
                logger.warning("starting the new container failed: restoring %s", params.app_name)
                containers.bring_back(
                    client, params.app_name, None, f"the new container did not start: {exc}"
                )
            raise
        logger.info(
            "started %s (%s) from %s (image %s)", params.app_name, container_id[:12], digest, image_id[:19]
        )
        replaced = [aside.previous_id] if aside.previous_id else []
        return {"container_id": container_id, "replaced": replaced, "image_id": image_id, "unchanged": False}
    finally:
        client.close()


@task(name="health-check")
def check_health(params: DeployParams, container_id: str, replaced: bool = True) -> HealthResult:
    """Wait for the new container to be healthy; DeployFailed with its last log lines otherwise.
    replaced=False: the container was left running (up to date), so there is nothing to restore."""
    logger = get_run_logger()
    client = _client(params.docker_host_block)
    try:
        source = params.health.source
        if source == "auto":
            if engine.image_has_healthcheck(client, params.image_reference):
                source = "docker"
            else:
                source = "http" if params.health.url else "running"
        if source == "none":
            return HealthResult(healthy=True, source="none", detail="not checked", checks=0, seconds=0)
        health = engine.wait_healthy(
            client,
            container_id,
            source,
            params.health.url,
            params.health.timeout_seconds,
            interval=params.health.interval_seconds,
            logger=logger,
        )
        result = HealthResult(**health.__dict__)
        if not health.healthy:
            then = (
                "restoring the previous container"
                if replaced
                else "it was left running (already this image and configuration; force_redeploy replaces it)"
            )
            raise DeployFailed(
                f"{params.app_name} ({container_id[:12]}) is not healthy: {health.detail}; {then}",
                tail=engine.logs_tail(client, container_id),
                hint="the container's last log lines are below",
            )
        logger.info("healthy after %.1fs (%s): %s", health.seconds, source, redact(health.detail))
        return result
    finally:
        client.close()


@task(name="deploy-report")
def deploy_report(params: DeployParams, result: DeployResult) -> None:
    """A markdown artifact of what runs now."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"deploy-{params.app_name}".lower()).strip("-")
    ports = ", ".join(result.ports) or "none"
    create_markdown_artifact(
        key=key[:100],
        description=f"deploy-app {params.app_name}",
        markdown="\n".join(
            [
                f"# {params.app_name} ({params.environment})",
                "",
                "| | |",
                "|---|---|",
                f"| image | `{result.image_reference}` |",
                f"| digest | `{result.image_reference.partition('@')[2]}` |",
                f"| container | `{result.container_id[:12]}` |",
                f"| ports | {ports} |",
                f"| health | {'healthy' if result.health.healthy else 'UNHEALTHY'} "
                f"via {result.health.source}: "
                f"{result.health.detail} ({result.health.seconds:.1f}s) |",
                f"| replaced | {', '.join(c[:12] for c in result.replaced) or 'nothing'}"
                f"{' (already up to date)' if result.unchanged else ''} |",
            ]
        ),
    )
