"""publish-image's tasks: the app image built, the registry's URL, the push (retried when transient)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect_docker import DockerRegistryCredentials

from blocks import resolve
from blocks.docker_host import registry_auth
from tasks.release.access import client_of
from tasks.release.models import (
    ImageRef,
    PublishParams,
)
from tools import docker_engine as engine
from tools import sbt
from tools.errors import InvalidInput, retry_if_transient


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
    client = client_of(params.docker_host_block)
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
    return resolve.load(DockerRegistryCredentials, block_name).registry_url


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
    client = client_of(docker_host_block, sends_secrets=True)
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
