"""Image references and registry credentials: validated names, registry hosts compared normalised, and
`auth_for`, which gives credentials only to their own registry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tools.errors import InvalidInput
from tools.redact import register_secret

# --- references -----------------------------------------------------------------------------------------
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
)
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def validate_repository(repository: str) -> str:
    """`[host[:port]/]path`; like docker, the first component is a host only with '.', ':' or localhost."""
    first, _, rest = repository.partition("/")
    has_host = bool(rest) and ("." in first or ":" in first or first == "localhost")
    path = rest if has_host else repository
    if (
        not repository
        or len(repository) > 255
        or (has_host and not re.fullmatch(_HOST, first))
        or not _PATH_RE.fullmatch(path)
    ):
        raise InvalidInput(
            f"image repository {repository!r} is invalid: lowercase path components [a-z0-9] separated by "
            "'.', '_', '__' or '-', joined by '/', optionally after a registry host[:port]/"
        )
    return repository


def validate_image_path(path: str) -> str:
    """A repository path without registry host (the registry comes from the credentials block)."""
    first = path.split("/", 1)[0]
    if "/" in path and ("." in first or ":" in first or first == "localhost"):
        raise InvalidInput(
            f"image repository {path!r} names a registry host; give the path only (e.g. 'hire-help'), "
            "the registry comes from the registry credentials block"
        )
    if not path or not _PATH_RE.fullmatch(path):
        raise InvalidInput(
            f"image repository {path!r} is invalid: lowercase components [a-z0-9._-] joined by '/'"
        )
    return path


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag or ""):
        raise InvalidInput(
            f"image tag {tag!r} is invalid: 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        )
    return tag


def validate_digest(digest: str) -> str:
    if not _DIGEST_RE.fullmatch(digest or ""):
        raise InvalidInput(f"image digest {digest!r} is invalid: expected sha256:<64 hex digits>")
    return digest


_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def registry_host(registry_url: str) -> str:
    """`127.0.0.1:5000` from `http://127.0.0.1:5000/`; docker.io for Docker Hub's index URL."""
    host = re.sub(r"^[a-z]+://", "", registry_url.strip()).rstrip("/")
    if host in ("index.docker.io/v1", "index.docker.io", "registry-1.docker.io"):
        return "docker.io"
    return host.split("/", 1)[0]


def same_registry_host(registry_url: str) -> str:
    """The host to compare registries by: lowercase, without a default port (:443, and :80 for http://),
    docker.io for all of Docker Hub's names."""
    url = registry_url.strip().lower()
    scheme = url.partition("://")[0] if "://" in url else ""
    host = re.sub(r"^[a-z]+://", "", url).rstrip("/").split("/", 1)[0]
    if host.endswith(":443") or (scheme == "http" and host.endswith(":80")):
        host = host.rpartition(":")[0]
    return "docker.io" if host in _DOCKER_HUB else host


def reference_host(reference: str) -> str:
    """The registry host an image reference names (docker.io when it names none), normalised."""
    first, _, rest = reference.partition("/")
    has_host = bool(rest) and ("." in first or ":" in first or first == "localhost")
    return same_registry_host(first) if has_host else "docker.io"


def auth_for(reference: str, auth: RegistryAuth | None) -> RegistryAuth | None:
    """The credentials only when the reference's registry is the block's registry; None otherwise."""
    if auth is not None and reference_host(reference) == same_registry_host(auth.registry):
        return auth
    return None


def full_repository(registry_url: str, path: str) -> str:
    host = registry_host(registry_url)
    return validate_repository(path if host == "docker.io" else f"{host}/{path}")


def split_reference(reference: str) -> tuple[str, str]:
    """`repo@sha256:...` -> (repo, digest); InvalidInput for anything else."""
    repo, sep, digest = reference.partition("@")
    if not sep:
        raise InvalidInput(
            f"image reference {reference!r} must be pinned by digest: <repository>@sha256:<hex>"
        )
    return validate_repository(repo), validate_digest(digest)


# --- auth ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for the daemon. `password` is registered for redaction on creation."""

    registry: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        register_secret(self.password)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}
