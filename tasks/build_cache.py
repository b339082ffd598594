"""Skip an unchanged build: the release's build inputs hash to a digest; the image built from them carries
the registry tag `inputs-<digest>`. When the registry already holds that tag, release re-tags that image
(pull by digest, tag, push: layers the registry has are not sent again) instead of building it again.

A lookup that fails (registry down, engine unreachable) is not fatal: the release builds, and the push
then reports the registry's own error with its retries.
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
from prefect import get_run_logger, task

from blocks.docker_host import docker_client, registry_auth
from tasks.release import BuildParams, ImageRef, PublishParams
from tools import build_inputs, sbt
from tools import docker_engine as engine
from tools.errors import PushFailed, RegistryAuthError


def _image_id(client: docker.DockerClient, image: str) -> str | None:
    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        return None


@task(name="hash-build-inputs")
def hash_build_inputs(build: BuildParams, publish: PublishParams) -> str | None:
    """The digest of everything the app image is made of, or None when an input image is not on the
    engine yet (its id is part of the digest; the build pulls it)."""
    log = get_run_logger()
    workspace = Path(build.app_path)
    project = sbt.read_project(workspace)
    client = docker_client(build.docker_host_block)
    try:
        builder, base = _image_id(client, build.builder_image), _image_id(client, publish.base_image)
    finally:
        client.close()
    if builder is None or base is None:
        missing = build.builder_image if builder is None else publish.base_image
        log.info("build inputs: %s is not on the engine yet; building", missing)
        return None
    facts = {
        "builder_image": builder,
        "build_command": json.dumps(build.build_command),
        "build_env": build.env,
        "base_image": base,
        "app_secrets_block": build.app_secrets_block,
    }
    value = build_inputs.digest(workspace, facts, skip=[project.package])
    log.info("build inputs of %s %s: %s", project.name, project.version, value[:12])
    return value


def tagged_with_inputs(publish: PublishParams, inputs: str | None) -> PublishParams:
    """The publish parameters that also tag the image with its build inputs (when known)."""
    return publish.model_copy(update={"inputs_tag": build_inputs.inputs_tag(inputs) if inputs else None})


@task(name="find-built-image")
def reuse_built_image(publish: PublishParams, inputs: str) -> ImageRef | None:
    """The image built from these inputs, re-tagged with this release's tags and pushed; None when the
    registry has none (or cannot be asked: the release then builds)."""
    log = get_run_logger()
    project = sbt.read_project(Path(publish.app_path))
    auth = registry_auth(publish.registry_block)
    repository = engine.full_repository(auth.registry, publish.image_repository or project.name)
    marker = build_inputs.inputs_tag(inputs)
    client = docker_client(publish.docker_host_block, sends_secrets=True)
    try:
        try:
            digest = engine.registry_digest(client, f"{repository}:{marker}", auth)
        except RegistryAuthError:
            raise
        except PushFailed as exc:
            log.warning(
                "could not ask the registry for %s:%s (%s): building", repository, marker, exc.message
            )
            return None
        if digest is None:
            log.info("no image of these build inputs in the registry (%s:%s): building", repository, marker)
            return None
        reference = f"{repository}@{digest}"
        log.info("build skipped: %s is the image of these build inputs (%s)", reference, marker)
        image_id = engine.pull(client, reference, auth, logger=log)
        tags = list(dict.fromkeys([project.version, publish.environment, *publish.extra_tags, marker]))
        engine.tag(client, image_id, repository, tags)
        pushed = engine.push(client, repository, tags, auth, logger=log)
    finally:
        client.close()
    if pushed != digest:
        raise PushFailed(f"re-tag of {reference}: the registry reported {pushed} for its tags")
    return ImageRef(repository=repository, tags=tags, digest=digest, reference=reference, image_id=image_id)
