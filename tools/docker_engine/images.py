"""Images on the Docker engine: login, build, push, pull, the registry's digest of a tag, local tags.

Passwords go to the daemon only (`client.login(..., dockercfg_path=<empty temp file>)`, `auth_config` on
push/pull), and only to their own registry (references.auth_for). Errors are translated in translate.py.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from tools.docker_engine.references import (
    RegistryAuth,
    auth_for,
    reference_host,
    same_registry_host,
    split_reference,
    validate_digest,
    validate_tag,
)
from tools.docker_engine.translate import build_errors, pull_error, registry_error, registry_errors
from tools.errors import TAIL_LINES, ImageBuildFailed, InvalidInput, PullFailed, PushFailed, RegistryError
from tools.process import default_logger
from tools.redact import redact

Logger = logging.Logger | logging.LoggerAdapter


def login(client: docker.DockerClient, auth: RegistryAuth) -> None:
    """Send the credentials to the daemon (`/auth`); nothing is written to a docker config file."""
    with tempfile.TemporaryDirectory(prefix="devops-flows-dockercfg-") as tmp:
        cfg = Path(tmp) / "config.json"  # never created: login reads it (absent) and writes nothing
        with registry_errors(f"login to {auth.registry}"):
            client.login(
                username=auth.username,
                password=auth.password,
                registry=auth.registry,
                reauth=True,
                dockercfg_path=str(cfg),
            )


# --- build ----------------------------------------------------------------------------------------------
@dataclass
class BuiltImage:
    image_id: str
    tags: list[str]
    tail: list[str]


def build_image(
    client: docker.DockerClient,
    context: Path,
    dockerfile: str,
    tags: Sequence[str],
    buildargs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    logger: Logger | None = None,
    timeout: float = 1800,
) -> BuiltImage:
    """`docker build` with its output streamed line by line; ImageBuildFailed with the daemon's error."""
    log = logger or default_logger()
    if not tags:
        raise InvalidInput("at least one image tag is needed")
    first, *others = tags
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    image_id: str | None = None
    log.info("docker build %s (dockerfile %s) -> %s", context, dockerfile, ", ".join(tags))
    with build_errors(first, tail):
        events = client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=first,
            buildargs=dict(buildargs or {}),
            labels=dict(labels or {}),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            timeout=int(timeout),
        )
        for event in events:
            if "stream" in event:
                for line in str(event["stream"]).splitlines():
                    if line.strip():
                        line = redact(line)
                        tail.append(line)
                        log.info("%s", line)
            if "aux" in event and isinstance(event["aux"], dict) and event["aux"].get("ID"):
                image_id = event["aux"]["ID"]
            if "error" in event:
                message = redact(str(event.get("errorDetail", {}).get("message") or event["error"]))
                tail.append(message)
                raise ImageBuildFailed(f"docker build of {first} failed: {message}", tail=list(tail))
    if image_id is None:
        image_id = client.images.get(first).id
    for ref in others:
        repo, _, tag = ref.rpartition(":")
        client.api.tag(image_id, repo, tag)
    return BuiltImage(image_id=image_id, tags=list(tags), tail=list(tail))


# --- push / pull ----------------------------------------------------------------------------------------
def _stream_progress(
    events: Iterable[dict], what: str, log: Logger, failed: type[RegistryError] = PushFailed
) -> tuple[str | None, list[str]]:
    digest: str | None = None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    last_status: dict[str, str] = {}
    for event in events:
        if "error" in event:
            message = str(event.get("errorDetail", {}).get("message") or event["error"])
            raise registry_error(message, what, failed=failed)
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
        status = event.get("status")
        if status:
            layer = event.get("id", "")
            line = redact(f"{layer}: {status}" if layer else status)
            if last_status.get(layer) != status:  # progress bars repeat the same status
                last_status[layer] = status
                tail.append(line)
                log.info("%s", line)
            if digest is None:
                found = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
                if found:
                    digest = found.group(1)
    return digest, list(tail)


def push(
    client: docker.DockerClient,
    repository: str,
    tags: Sequence[str],
    auth: RegistryAuth,
    logger: Logger | None = None,
) -> str:
    """Push every tag; return the manifest digest the registry reported (`aux.Digest`)."""
    log = logger or default_logger()
    if auth_for(repository, auth) is None:
        raise InvalidInput(
            f"push of {repository} refused: its registry {reference_host(repository)} is not the registry "
            f"of the credentials block ({same_registry_host(auth.registry)}); credentials go only to their "
            "registry"
        )
    digests: set[str] = set()
    for tag in tags:
        what = f"push of {repository}:{tag}"
        log.info("docker push %s:%s", repository, tag)
        with registry_errors(what):
            events = client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=auth.auth_config()
            )
            digest, tail = _stream_progress(events, what, log)
        if not digest:
            raise PushFailed(f"{what}: the registry reported no digest", tail=tail)
        digests.add(digest)
    if len(digests) != 1:
        raise PushFailed(f"push of {repository}: tags got different digests: {sorted(digests)}")
    return digests.pop()


def pull(
    client: docker.DockerClient, reference: str, auth: RegistryAuth | None, logger: Logger | None = None
) -> str:
    """Pull `repo@sha256:...`; return the local image id. The credentials are sent only to their own
    registry: an image of another registry is pulled anonymously. PullFailed, or RegistryAuthError."""
    log = logger or default_logger()
    repo, digest = split_reference(reference)
    scoped = auth_for(repo, auth)
    what = f"pull of {reference}"
    if auth is not None and scoped is None:
        what += f" (anonymous: the credentials block is for {same_registry_host(auth.registry)})"
    log.info("docker pull %s%s", reference, "" if scoped or auth is None else " anonymously")
    try:
        events = client.api.pull(
            repo, tag=digest, stream=True, decode=True, auth_config=scoped.auth_config() if scoped else None
        )
        _stream_progress(events, what, log, failed=PullFailed)
        return client.images.get(reference).id
    except (docker.errors.APIError, RegistryError, requests.exceptions.RequestException) as exc:
        raise pull_error(exc, what, reference_host(repo), anonymous=scoped is None) from None


def registry_digest(client: docker.DockerClient, reference: str, auth: RegistryAuth | None) -> str | None:
    """The manifest digest the registry holds for `repo:tag` (asked through the daemon, credentials only to
    their own registry), or None when it has no such tag."""
    scoped = auth_for(reference, auth)
    with registry_errors(f"lookup of {reference}"):
        try:
            found = client.api.inspect_distribution(
                reference, auth_config=scoped.auth_config() if scoped else None
            )
        except docker.errors.NotFound:
            return None
    return validate_digest(found["Descriptor"]["digest"])


def tag(client: docker.DockerClient, image: str, repository: str, tags: Sequence[str]) -> None:
    """Give the local `image` every `repository:tag`."""
    for name in tags:
        client.api.tag(image, repository, validate_tag(name))
