"""The release pipeline: the article's Jenkins "build phase" and "deployment phase" as Prefect flows.

    build-app      build.sbt version -> clean artifacts -> sbt in a builder container -> unpack the zip
    publish-image  docker build (OCI labels, version + environment tags) -> login + push -> ImageRef
    deploy-app     pull by digest -> set the container named app_name aside (stopped, renamed, image
                   pinned) -> run the new one with its mounts -> health check -> discard the set-aside
                   one, or bring it back when unhealthy (AppDown + notification if that fails)
    release        build-app -> publish-image -> deploy-app as subflows, one parameter model; build and
                   push are skipped when the registry holds the image of the same build inputs
                   (tag inputs-<digest>, see tasks/build_cache.py) unless force_build

Flows only compose tasks; parameters are validated (InvalidInput) before any side effect.

No `from __future__ import annotations`: a served flow (a worker, `serve()`) validates its parameters
against the annotations as written, and postponed ones leave `Deploy_AppModel` "not fully defined".
"""

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

import flows  # noqa: F401 - the engine fix (flows/engine.py), also when Prefect loads this file by path
from blocks import APP_SECRETS_BLOCK, DOCKER_HOST_BLOCK, REGISTRY_BLOCK
from tasks import audit
from tasks.build_cache import hash_build_inputs, reuse_built_image, tagged_with_inputs
from tasks.containers import discard_previous, notify_app_down, restore_previous
from tasks.preflight import check_dockerfile
from tasks.release import (
    BuildOptions,
    BuildParams,
    BuildResult,
    DeployOptions,
    DeployParams,
    DeployResult,
    Environment,
    HealthResult,
    ImageRef,
    PortMapping,
    PublishOptions,
    PublishParams,
    build_app_image,
    check_builder_secrets,
    check_health,
    clean_artifacts,
    deploy_report,
    push_image,
    read_project,
    read_sbt_project,
    registry_url,
    replace_container,
    run_build,
    unpack_package,
)
from tasks.task_runner import StoppingThreadPoolTaskRunner
from tools.errors import AppDown, DeployFailed


@flow(name="build-app", log_prints=False, task_runner=StoppingThreadPoolTaskRunner())
def build_app(params: BuildParams) -> BuildResult:
    """Build the sbt app in a builder container and unpack its universal zip in the work-tree."""
    workspace = params.check()
    check_builder_secrets(params)
    project = read_project(workspace)
    clean_artifacts(workspace, project)
    archive = run_build(workspace, project, params)
    package_dir = unpack_package(archive, workspace, project)
    return BuildResult(
        name=project.name,
        version=project.version,
        workspace=str(workspace),
        archive=str(archive),
        package_dir=str(package_dir),
        builder_image=params.builder_image,
    )


@flow(name="publish-image")
def publish_image(params: PublishParams) -> ImageRef:
    """Build the app image from the unpacked package and push it; returns the digest-pinned reference."""
    workspace = params.check()
    check_dockerfile(str(workspace / "Dockerfile"))
    project = read_project(workspace)
    url = registry_url(params.registry_block)
    built = build_app_image(workspace, project, params, url)
    pusher = push_image.with_options(
        retries=params.push_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=params.retry_delay_seconds)(
            params.push_retries
        )
        if params.push_retries
        else 0,
    )
    return pusher(built, params.docker_host_block, params.registry_block)


@flow(name="deploy-app")
def deploy_app(params: DeployParams) -> DeployResult:
    """Replace the running container with the new image, keeping its volumes; restore the previous one
    if the new one is unhealthy; a failed restore is AppDown and notifies."""
    params.check()
    started = replace_container(params)
    replaced = not started["unchanged"]
    try:
        health = check_health(params, started["container_id"], replaced=replaced)
    except DeployFailed as exc:
        if replaced:
            try:
                restore_previous(
                    params.docker_host_block,
                    params.app_name,
                    started["container_id"],
                    exc.message,
                    had_previous=bool(started["replaced"]),
                )
                audit.record("app", "restored", params.app_name, failed_image=params.image_reference)
            except AppDown as down:
                if params.notify_block:
                    notify_app_down(params.notify_block, params.app_name, str(down))
                raise
        raise
    # healthy: the set-aside container goes (also one left by a run killed after its new container started)
    discard_previous(params.docker_host_block, params.app_name)
    result = DeployResult(
        app_name=params.app_name,
        container_id=started["container_id"],
        image_reference=params.image_reference,
        ports=[f"{p.host_ip}:{p.host_port}->{p.docker_key()}" for p in params.ports],
        health=health,
        replaced=started["replaced"],
        unchanged=started["unchanged"],
    )
    deploy_report(params, result)
    if not result.unchanged:
        audit.record(
            "app",
            "deployed",
            params.app_name,
            image=params.image_reference,
            container_id=result.container_id,
            replaced=result.replaced,
        )
    return result


class ReleaseParams(BaseModel):
    """Everything one release needs: the app, its environment and blocks, and one section per stage
    (the stage models' own options: build-app's, publish-image's, deploy-app's)."""

    app_path: str = Field(
        title="App work-tree", description="Folder with build.sbt, build.sh and the Dockerfile."
    )
    environment: Environment = Field(
        default="dev", title="Environment", description="Image tag and PROJECT_ENV."
    )
    app_name: str | None = Field(
        default=None,
        title="Container name",
        description="Default: <sbt name>-<environment>.",
        examples=["hire-help-dev"],
    )
    build: BuildOptions = Field(default_factory=BuildOptions, title="Build")
    publish: PublishOptions = Field(default_factory=PublishOptions, title="Publish")
    deploy: DeployOptions = Field(
        default_factory=lambda: DeployOptions(ports=[PortMapping(container_port=10000, host_port=10000)]),
        title="Deploy",
    )
    docker_host_block: str = Field(default=DOCKER_HOST_BLOCK, title="Docker host block")
    registry_block: str = Field(default=REGISTRY_BLOCK, title="Registry block")
    app_secrets_block: str | None = Field(default=APP_SECRETS_BLOCK, title="App secrets block")
    labels: dict[str, str] = Field(
        default_factory=dict, title="Labels", description="On builder and app containers."
    )
    force_build: bool = Field(
        default=False,
        title="Build even if unchanged",
        description="Build and push even when the registry holds the image of the same build inputs.",
    )

    def build_params(self) -> BuildParams:
        return BuildParams(
            **self.build.model_dump(),
            app_path=self.app_path,
            app_secrets_block=self.app_secrets_block,
            docker_host_block=self.docker_host_block,
            labels=self.labels,
        )

    def publish_params(self) -> PublishParams:
        return PublishParams(
            **self.publish.model_dump(),
            app_path=self.app_path,
            environment=self.environment,
            docker_host_block=self.docker_host_block,
            registry_block=self.registry_block,
        )

    def deploy_params(self, name: str, image: ImageRef | None = None) -> DeployParams:
        placeholder = "placeholder@sha256:" + "0" * 64
        return DeployParams(
            **self.deploy.model_dump(),
            app_name=f"{name}-{self.environment}" if self.app_name is None else self.app_name,
            image_reference=image.reference if image else placeholder,
            environment=self.environment,
            app_secrets_block=self.app_secrets_block,
            docker_host_block=self.docker_host_block,
            registry_block=self.registry_block,
            labels=self.labels,
        )

    def check(self) -> None:
        """Validate all three stages before the first side effect."""
        self.build_params().check()
        self.publish_params().check()
        project = read_sbt_project(Path(self.app_path))
        self.deploy_params(project.name).check()


class ReleaseResult(BaseModel):
    build: BuildResult | None = Field(description="None when the build was skipped (unchanged inputs)")
    inputs: str | None = Field(default=None, description="digest of the build inputs, when known")
    image: ImageRef
    deploy: DeployResult
    health: HealthResult


@flow(name="release")
def release(params: ReleaseParams) -> ReleaseResult:
    """build-app -> publish-image -> deploy-app, each a subflow run of its own; build-app and
    publish-image are skipped when the registry holds the image of the same build inputs."""
    params.check()
    check_builder_secrets(params.build_params())  # an input check: before the first process
    check_dockerfile(str(Path(params.app_path) / "Dockerfile"))  # pre-flight: before any build or change
    publish = params.publish_params()
    inputs = hash_build_inputs(params.build_params(), publish)
    image = reuse_built_image(publish, inputs) if inputs and not params.force_build else None
    built = None
    if image is None:
        built = build_app(params.build_params())
        image = publish_image(tagged_with_inputs(publish, inputs))
    project = read_sbt_project(Path(params.app_path))
    deployed = deploy_app(params.deploy_params(project.name, image))
    get_run_logger().info("released %s %s as %s", project.name, project.version, image.reference)
    return ReleaseResult(build=built, inputs=inputs, image=image, deploy=deployed, health=deployed.health)
