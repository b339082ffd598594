"""The Docker engine through the docker SDK: build, login, push, pull, run, health.

Docker talks to a daemon, not a child process, so `tools.process` is not involved; the rules are the same:
- every line of output (build stream, container logs) is redacted and streamed to the logger as it comes;
- passwords go to the daemon only: `client.login(..., dockercfg_path=<empty temp file>)` and
  `auth_config` on push/pull; no docker config file is read or written;
- credentials go only to their own registry (`auth_for`: hosts compared normalised); a pull from
  another registry is anonymous, a push to another registry is refused before any call;
- clients are built from DockerHost blocks by `blocks.docker_host.docker_client`, never here;
- push/pull `error` events become PushFailed / RegistryAuthError (never retried) with the daemon's text;
- containers we start for a job are removed in `finally`, also on Prefect's TerminationSignal; the
  log-follow loop runs on a thread and the main thread checks the deadline.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from tools.errors import (
    TAIL_LINES,
    ImageBuildFailed,
    InvalidInput,
    ProcessTimeout,
    PushFailed,
    RegistryAuthError,
    ToolError,
    looks_transient,
)
from tools.http_check import http_ok
from tools.process import default_logger
from tools.redact import redact, register_secret

Logger = logging.Logger | logging.LoggerAdapter

# --- references -----------------------------------------------------------------------------------------
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
)
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# What the daemon says when a registry refuses credentials. The status code only as a word of its own: a
# registry on port 58401 that refuses connections is down, not an auth failure.
_AUTH_MARKERS = re.compile(
    r"unauthorized|no basic auth credentials|authentication required|denied|(?<![\w.:])401(?![\w.:])"
    r"|incorrect username or password"
)


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


def _registry_error(text: str, what: str, hint: str | None = None) -> PushFailed:
    text = redact(text)
    lowered = text.lower()
    if _AUTH_MARKERS.search(lowered):
        return RegistryAuthError(
            f"{what}: the registry rejected the credentials",
            tail=[text],
            hint="check the username/password in the registry credentials block",
        )
    return PushFailed(
        f"{what} failed", tail=[text], hint=hint, transient=looks_transient(text) or "500" in text
    )


def login(client: docker.DockerClient, auth: RegistryAuth) -> None:
    """Send the credentials to the daemon (`/auth`); nothing is written to a docker config file."""
    with tempfile.TemporaryDirectory(prefix="devops-flows-dockercfg-") as tmp:
        cfg = Path(tmp) / "config.json"  # never created: login reads it (absent) and writes nothing
        try:
            client.login(
                username=auth.username,
                password=auth.password,
                registry=auth.registry,
                reauth=True,
                dockercfg_path=str(cfg),
            )
        except docker.errors.APIError as exc:
            raise _registry_error(_api_text(exc), f"login to {auth.registry}") from None
        except requests.exceptions.RequestException as exc:
            raise PushFailed(
                f"login to {auth.registry}: the Docker engine is unreachable",
                tail=[redact(str(exc))],
                transient=True,
            ) from None


def _api_text(exc: docker.errors.APIError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


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
    try:
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
    except docker.errors.APIError as exc:
        raise ImageBuildFailed(
            f"docker build of {first} failed", tail=[*tail, redact(_api_text(exc))]
        ) from None
    except requests.exceptions.RequestException as exc:
        raise ImageBuildFailed(
            f"docker build of {first}: the engine is unreachable", tail=[redact(str(exc))], transient=True
        ) from None
    if image_id is None:
        image_id = client.images.get(first).id
    for ref in others:
        repo, _, tag = ref.rpartition(":")
        client.api.tag(image_id, repo, tag)
    return BuiltImage(image_id=image_id, tags=list(tags), tail=list(tail))


# --- push / pull ----------------------------------------------------------------------------------------
def _stream_progress(events: Iterable[dict], what: str, log: Logger) -> tuple[str | None, list[str]]:
    digest: str | None = None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    last_status: dict[str, str] = {}
    for event in events:
        if "error" in event:
            message = str(event.get("errorDetail", {}).get("message") or event["error"])
            raise _registry_error(message, what)
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
        try:
            events = client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=auth.auth_config()
            )
            digest, tail = _stream_progress(events, what, log)
        except docker.errors.APIError as exc:
            raise _registry_error(_api_text(exc), what) from None
        except requests.exceptions.RequestException as exc:
            raise PushFailed(
                f"{what}: the Docker engine is unreachable", tail=[redact(str(exc))], transient=True
            ) from None
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
    registry: an image of another registry is pulled anonymously."""
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
        _stream_progress(events, what, log)
        return client.images.get(reference).id
    except (docker.errors.APIError, PushFailed) as exc:
        err = exc if isinstance(exc, PushFailed) else _registry_error(_api_text(exc), what)
        if isinstance(err, RegistryAuthError) and scoped is None:
            err = RegistryAuthError(
                f"{what}: the registry {reference_host(repo)} wants credentials and none were sent",
                tail=err.tail,
                hint="credentials go only to their own registry: give deploy-app the registry block of "
                f"{reference_host(repo)}",
            )
        raise err from None
    except requests.exceptions.RequestException as exc:
        raise PushFailed(
            f"{what}: the Docker engine is unreachable", tail=[redact(str(exc))], transient=True
        ) from None


def registry_digest(client: docker.DockerClient, reference: str, auth: RegistryAuth | None) -> str | None:
    """The manifest digest the registry holds for `repo:tag` (asked through the daemon, credentials only to
    their own registry), or None when it has no such tag."""
    scoped = auth_for(reference, auth)
    try:
        found = client.api.inspect_distribution(
            reference, auth_config=scoped.auth_config() if scoped else None
        )
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise _registry_error(_api_text(exc), f"lookup of {reference}") from None
    except requests.exceptions.RequestException as exc:
        raise PushFailed(
            f"lookup of {reference}: the Docker engine is unreachable",
            tail=[redact(str(exc))],
            transient=True,
        ) from None
    return validate_digest(found["Descriptor"]["digest"])


def tag(client: docker.DockerClient, image: str, repository: str, tags: Sequence[str]) -> None:
    """Give the local `image` every `repository:tag`."""
    for name in tags:
        client.api.tag(image, repository, validate_tag(name))


# --- containers -----------------------------------------------------------------------------------------
@dataclass
class ContainerRun:
    """What to run. `secret_names` lists the environment keys whose values are secret (never logged)."""

    image: str
    command: Sequence[str] | None = None
    name: str | None = None
    working_dir: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    secret_names: Sequence[str] = ()
    volumes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    ports: Mapping[str, Any] = field(default_factory=dict)  # "8080/tcp" -> (host_ip, host_port) | [..]
    labels: Mapping[str, str] = field(default_factory=dict)
    restart_policy: Mapping[str, Any] | None = None
    nano_cpus: int | None = None
    mem_limit: str | None = None
    entrypoint: Sequence[str] | None = None
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # mount point -> options, e.g. "size=1m"

    def describe(self) -> str:
        plain = sorted(k for k in self.environment if k not in self.secret_names)
        return (
            f"image={self.image} command={list(self.command) if self.command else '(image default)'} "
            f"env={plain} secret env={sorted(self.secret_names)} ports={dict(self.ports)}"
        )

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": list(self.command) if self.command else None,
            "name": self.name,
            "working_dir": self.working_dir,
            "environment": dict(self.environment),
            "volumes": {k: dict(v) for k, v in self.volumes.items()},
            "ports": dict(self.ports),
            "labels": dict(self.labels),
            "nano_cpus": self.nano_cpus,
            "mem_limit": self.mem_limit,
            "entrypoint": list(self.entrypoint) if self.entrypoint else None,
            "tmpfs": dict(self.tmpfs),
        }
        if self.restart_policy:
            out["restart_policy"] = dict(self.restart_policy)
        return {k: v for k, v in out.items() if v not in (None, {}, [])}


@dataclass
class RunResult:
    container_id: str
    exit_code: int
    tail: list[str]
    duration: float


def _follow(container, sink: queue.Queue) -> None:  # noqa: ANN001
    buf = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                sink.put(line.decode("utf-8", errors="replace").rstrip("\r"))
        if buf:
            sink.put(buf.decode("utf-8", errors="replace"))
    except Exception:  # noqa: BLE001 - the container went away; the main loop notices
        pass
    finally:
        sink.put(None)


def run_to_completion(
    client: docker.DockerClient,
    spec: ContainerRun,
    timeout: float,
    logger: Logger | None = None,
    on_started: Callable[[str], None] | None = None,
) -> RunResult:
    """Run a job container, stream its logs (redacted) until it exits, ALWAYS remove it.

    The main thread waits on a queue with a short timeout, so the deadline is checked even when the
    container prints nothing, and Prefect's TerminationSignal (raised in the main thread on cancel)
    reaches the `finally` that removes the container.
    """
    log = logger or default_logger()
    for value in (spec.environment[k] for k in spec.secret_names if k in spec.environment):
        register_secret(value)
    log.info("docker run %s", spec.describe())
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    container = None
    try:
        container = client.containers.create(spec.image, **spec.kwargs())
        container.start()
        if on_started:
            on_started(container.id)
        lines: queue.Queue = queue.Queue()
        follower = threading.Thread(
            target=_follow, args=(container, lines), daemon=True, name="container-logs"
        )
        follower.start()
        deadline = started + timeout
        done = False
        while not done:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
                if time.monotonic() > deadline:
                    raise ProcessTimeout(
                        f"container {spec.image} did not finish within {timeout:g}s; it was removed",
                        argv=list(spec.command or []),
                        tail=list(tail),
                    ) from None
                continue
            if line is None:
                done = True
                continue
            line = redact(line)
            tail.append(line)
            log.info("%s", line)
        status = container.wait(timeout=60)
        exit_code = int(status.get("StatusCode", -1))
        return RunResult(container.id, exit_code, list(tail), time.monotonic() - started)
    except docker.errors.ImageNotFound as exc:
        raise ToolError(
            f"image {spec.image} not found on the engine",
            tail=[redact(_api_text(exc))],
            hint="build or pull the builder image first",
        ) from None
    except docker.errors.APIError as exc:
        raise ToolError(f"docker run of {spec.image} failed", tail=[*tail, redact(_api_text(exc))]) from None
    finally:
        if container is not None:
            remove_container(client, container.id, log)


def remove_container(
    client: docker.DockerClient, container_id: str, log: Logger | None = None, volumes: bool = True
) -> None:
    """Remove a container; volumes=True also removes its anonymous volumes (jobs), False keeps them (apps)."""
    try:
        client.api.remove_container(container_id, force=True, v=volumes)
        if log:
            log.info("removed container %s", container_id[:12])
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in _api_text(exc):
            raise
        deadline = time.monotonic() + 60  # someone else removes it: wait until it is gone
        while time.monotonic() < deadline:
            try:
                client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(0.5)
        raise


def find_exact(client: docker.DockerClient, name: str) -> list:
    """Containers whose name is exactly `name` (the article's `grep -E "\\s$APP_NAME\\s*$"`)."""
    candidates = client.containers.list(all=True, filters={"name": f"^/{re.escape(name)}$"})
    return [c for c in candidates if c.name == name]


@dataclass
class ContainerSnapshot:
    """Enough of a container's configuration to recreate it from its image."""

    name: str
    image_id: str
    image_ref: str
    command: list[str] | None
    entrypoint: list[str] | None
    environment: list[str]
    ports: dict[str, list[tuple[str, int]]]
    labels: dict[str, str]
    restart_policy: dict[str, Any] | None
    working_dir: str | None


def snapshot(container) -> ContainerSnapshot:  # noqa: ANN001
    attrs = container.attrs
    cfg, host = attrs.get("Config", {}), attrs.get("HostConfig", {})
    ports: dict[str, list[tuple[str, int]]] = {}
    for key, bindings in (host.get("PortBindings") or {}).items():
        ports[key] = [
            (b.get("HostIp") or "0.0.0.0", int(b["HostPort"])) for b in bindings or [] if b.get("HostPort")
        ]
    policy = host.get("RestartPolicy") or None
    return ContainerSnapshot(
        name=container.name,
        image_id=attrs["Image"],
        image_ref=cfg.get("Image", ""),
        command=cfg.get("Cmd"),
        entrypoint=cfg.get("Entrypoint"),
        environment=list(cfg.get("Env") or []),
        ports=ports,
        labels=dict(cfg.get("Labels") or {}),
        restart_policy={"Name": policy["Name"]} if policy and policy.get("Name") else None,
        working_dir=cfg.get("WorkingDir") or None,
    )


def _env(pairs: Sequence[str] | None) -> dict[str, str]:
    return dict(p.split("=", 1) if "=" in p else (p, "") for p in pairs or [])


def difference(client: docker.DockerClient, container, spec: ContainerRun, image_id: str) -> str | None:  # noqa: ANN001
    """What keeps `container` from being what `spec` would start from image_id, or None: same image,
    command, environment (the image's defaults under spec's), published ports, labels and restart policy,
    and running, not unhealthy. Values are compared, never shown: the environment holds secrets."""
    attrs = container.attrs
    cfg, host, state = attrs.get("Config", {}), attrs.get("HostConfig", {}), attrs.get("State", {})
    if attrs.get("Image") != image_id:
        return f"it runs image {str(attrs.get('Image'))[:19]}, not {image_id[:19]}"
    if not state.get("Running") or state.get("Restarting") or state.get("Paused"):
        return f"it is {state.get('Status')}"
    if (state.get("Health") or {}).get("Status") == "unhealthy":
        return "it is unhealthy"
    image_cfg = client.images.get(image_id).attrs.get("Config") or {}
    if list(cfg.get("Cmd") or []) != list(spec.command or image_cfg.get("Cmd") or []):
        return "its command differs"
    want = {**_env(image_cfg.get("Env")), **spec.environment}
    have = _env(cfg.get("Env"))
    if have != want:
        keys = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        return f"its environment differs in {keys}"
    wanted_ports = {
        key: sorted((ip or "0.0.0.0", int(port)) for ip, port in (v if isinstance(v, list) else [v]))
        for key, v in spec.ports.items()
    }
    if {k: sorted(v) for k, v in snapshot(container).ports.items() if v} != wanted_ports:
        return "its published ports differ"
    labels = cfg.get("Labels") or {}
    if any(labels.get(k) != v for k, v in spec.labels.items()):
        return "its labels differ"
    policy = (host.get("RestartPolicy") or {}).get("Name") or None
    if policy != ((spec.restart_policy or {}).get("Name") or None):
        return f"its restart policy is {policy}"
    return None


def run_detached(client: docker.DockerClient, spec: ContainerRun, logger: Logger | None = None) -> str:
    log = logger or default_logger()
    for value in (spec.environment[k] for k in spec.secret_names if k in spec.environment):
        register_secret(value)
    log.info("docker run -d %s", spec.describe())
    try:
        container = client.containers.run(detach=True, image=spec.image, **spec.kwargs())
    except docker.errors.APIError as exc:
        raise ToolError(f"docker run of {spec.image} failed", tail=[redact(_api_text(exc))]) from None
    return container.id


def logs_tail(client: docker.DockerClient, container_id: str, lines: int = TAIL_LINES) -> list[str]:
    try:
        raw = client.api.logs(container_id, stdout=True, stderr=True, tail=lines)
    except docker.errors.APIError:
        return []
    return [redact(line) for line in raw.decode("utf-8", errors="replace").splitlines()]


# --- health ---------------------------------------------------------------------------------------------
@dataclass
class Health:
    healthy: bool
    source: str  # docker | http | running
    detail: str
    checks: int
    seconds: float


def image_has_healthcheck(client: docker.DockerClient, image: str) -> bool:
    test = (client.images.get(image).attrs.get("Config") or {}).get("Healthcheck", {}) or {}
    return bool(test.get("Test")) and test["Test"][0] != "NONE"


def wait_healthy(
    client: docker.DockerClient,
    container_id: str,
    source: str,
    url: str | None,
    deadline_seconds: float,
    interval: float = 1.0,
    logger: Logger | None = None,
    settle_seconds: float = 3.0,
) -> Health:
    """Poll until healthy, definitely unhealthy (Docker says so, or the container exited) or the deadline.

    source: "docker" (the container's HEALTHCHECK status), "http" (GET `url`), "running" (still running
    after `settle_seconds`).
    """
    log = logger or default_logger()
    start = time.monotonic()
    checks, detail = 0, "not checked"
    while True:
        checks += 1
        try:
            container = client.containers.get(container_id)
        except docker.errors.NotFound:
            return Health(False, source, "the container disappeared", checks, time.monotonic() - start)
        state = container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead") or (state.get("Restarting") and state.get("ExitCode")):
            detail = f"container {state.get('Status')} (exit code {state.get('ExitCode')})"
            return Health(False, source, detail, checks, time.monotonic() - start)
        if source == "docker":
            health = state.get("Health") or {}
            status = health.get("Status", "none")
            last = (health.get("Log") or [{}])[-1]
            detail = f"docker health {status}" + (
                f": {str(last.get('Output', '')).strip()[:200]}" if last else ""
            )
            if status == "healthy":
                return Health(True, source, detail, checks, time.monotonic() - start)
            if status == "unhealthy":
                return Health(False, source, redact(detail), checks, time.monotonic() - start)
        elif source == "http":
            ok, detail = http_ok(url or "")
            detail = f"GET {url}: {detail}"
            if ok:
                return Health(True, source, detail, checks, time.monotonic() - start)
        else:
            detail = f"container {state.get('Status')}"
            if state.get("Running") and time.monotonic() - start >= settle_seconds:
                return Health(True, source, detail, checks, time.monotonic() - start)
        if time.monotonic() - start > deadline_seconds:
            return Health(
                False,
                source,
                f"deadline of {deadline_seconds:g}s passed; last: {detail}",
                checks,
                time.monotonic() - start,
            )
        if checks % 5 == 1:
            log.info("health (%s): %s", source, redact(detail))
        time.sleep(interval)


def docker_config_paths() -> list[Path]:
    """Where a docker client would keep credentials (for tests and audits)."""
    paths = [Path.home() / ".docker" / "config.json"]
    if os.environ.get("DOCKER_CONFIG"):
        paths.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    return paths
