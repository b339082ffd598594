"""build-app's tasks: the builder's secrets checked, build.sbt read, previous artifacts cleaned, the sbt
build in its builder container, the universal zip unpacked."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from blocks import AppSecrets, resolve
from tasks.release.access import app_secrets, client_of
from tasks.release.models import (
    BuildParams,
)
from tools import sbt
from tools.errors import InvalidInput


# --- build-app ------------------------------------------------------------------------------------------
@task(name="check-builder-secrets")
def check_builder_secrets(params: BuildParams) -> None:
    """Before anything runs: the builder image may receive the AppSecrets block (its allowlist)."""
    if params.app_secrets_block:
        resolve.load(AppSecrets, params.app_secrets_block).check_builder(
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
    secret_env = app_secrets(params.app_secrets_block, builder_image=params.builder_image)
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
    client = client_of(params.docker_host_block, sends_secrets=bool(secret_env))
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
