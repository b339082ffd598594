"""The one place where the docker SDK's errors become our error tree (tools.errors).

docker.errors.APIError of a registry call     -> PushFailed / PullFailed, or RegistryAuthError when the
                                                 registry refused the credentials (never retried)
requests RequestException (engine unreachable) -> the same class, transient
an `error` event of a push or pull stream      -> as an APIError of that call
APIError of a build                            -> ImageBuildFailed (unreachable engine: transient)
ImageNotFound / APIError of a container run    -> ToolError naming the image
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions

from tools.errors import (
    ImageBuildFailed,
    PullFailed,
    PushFailed,
    RegistryAuthError,
    RegistryError,
    ToolError,
    looks_transient,
)
from tools.redact import redact

# What the daemon says when a registry refuses credentials. The status code only as a word of its own: a
# registry on port 58401 that refuses connections is down, not an auth failure.
_AUTH_MARKERS = re.compile(
    r"unauthorized|no basic auth credentials|authentication required|denied|(?<![\w.:])401(?![\w.:])"
    r"|incorrect username or password"
)


def api_text(exc: docker.errors.APIError) -> str:
    """The daemon's own message of an APIError."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def registry_error(
    text: str, what: str, hint: str | None = None, failed: type[RegistryError] = PushFailed
) -> RegistryError:
    """The daemon's text of a failed registry operation as `failed` (PushFailed for a login, lookup or
    push, PullFailed for a pull), or RegistryAuthError when the registry refused the credentials."""
    text = redact(text)
    lowered = text.lower()
    if _AUTH_MARKERS.search(lowered):
        return RegistryAuthError(
            f"{what}: the registry rejected the credentials",
            tail=[text],
            hint="check the username/password in the registry credentials block",
        )
    return failed(f"{what} failed", tail=[text], hint=hint, transient=looks_transient(text) or "500" in text)


def engine_unreachable(
    what: str, exc: requests.exceptions.RequestException, failed: type[RegistryError] = PushFailed
) -> RegistryError:
    return failed(f"{what}: the Docker engine is unreachable", tail=[redact(str(exc))], transient=True)


@contextmanager
def registry_errors(what: str, failed: type[RegistryError] = PushFailed) -> Iterator[None]:
    """The docker SDK's errors of one registry operation as `failed` (RegistryAuthError when the registry
    refused the credentials), carrying the daemon's own message."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise registry_error(api_text(exc), what, failed=failed) from None
    except requests.exceptions.RequestException as exc:
        raise engine_unreachable(what, exc, failed) from None


def pull_error(exc: Exception, what: str, host: str, anonymous: bool) -> RegistryError:
    """A failed pull as PullFailed, or RegistryAuthError; an anonymous pull the registry refused says that
    no credentials were sent (they go only to their own registry)."""
    # an APIError is a requests HTTPError too: the daemon answered, so it is no unreachable engine
    if isinstance(exc, requests.exceptions.RequestException) and not isinstance(exc, docker.errors.APIError):
        return engine_unreachable(what, exc, PullFailed)
    err = exc if isinstance(exc, RegistryError) else registry_error(api_text(exc), what, failed=PullFailed)
    if isinstance(err, RegistryAuthError) and anonymous:
        err = RegistryAuthError(
            f"{what}: the registry {host} wants credentials and none were sent",
            tail=err.tail,
            hint=f"credentials go only to their own registry: give deploy-app the registry block of {host}",
        )
    return err


@contextmanager
def build_errors(image: str, tail: Iterable[str]) -> Iterator[None]:
    """The docker SDK's errors of a build of `image` as ImageBuildFailed (`tail`: the output so far)."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise ImageBuildFailed(
            f"docker build of {image} failed", tail=[*tail, redact(api_text(exc))]
        ) from None
    except requests.exceptions.RequestException as exc:
        raise ImageBuildFailed(
            f"docker build of {image}: the engine is unreachable", tail=[redact(str(exc))], transient=True
        ) from None


@contextmanager
def run_errors(image: str, tail: Iterable[str] = (), job: bool = True) -> Iterator[None]:
    """The docker SDK's errors of a container run of `image` as ToolError; for a job (a builder), a
    missing image says to build or pull it first."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        if not job:
            raise ToolError(f"docker run of {image} failed", tail=[*tail, redact(api_text(exc))]) from None
        raise ToolError(
            f"image {image} not found on the engine",
            tail=[redact(api_text(exc))],
            hint="build or pull the builder image first",
        ) from None
    except docker.errors.APIError as exc:
        raise ToolError(f"docker run of {image} failed", tail=[*tail, redact(api_text(exc))]) from None
