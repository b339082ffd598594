"""The Docker engine through the docker SDK: build, login, push, pull, run, health.

Docker talks to a daemon, not a child process, so `tools.process` is not involved; the rules are the same:
- every line of output (build stream, container logs) is redacted and streamed to the logger as it comes;
- passwords go to the daemon only: `client.login(..., dockercfg_path=<empty temp file>)` and
  `auth_config` on push/pull; no docker config file is read or written;
- credentials go only to their own registry (`auth_for`: hosts compared normalised); a pull from
  another registry is anonymous, a push to another registry is refused before any call;
- clients are built from DockerHost blocks by `blocks.docker_host.docker_client`, never here;
- the docker SDK's errors become our error tree in one place, `translate.py`: a failed push (login,
  lookup) is PushFailed, a failed pull PullFailed, refused credentials RegistryAuthError (never retried),
  each with the daemon's text;
- containers we start for a job are removed in `finally`, also on Prefect's TerminationSignal; the
  log-follow loop runs on a thread and the main thread checks the deadline.

Modules: `references` (names, hosts, credentials), `translate` (SDK errors -> tools.errors), `images`
(login, build, push, pull), `containers` (job and app containers), `health`.
"""

from tools.docker_engine.containers import (
    ContainerRun,
    ContainerSnapshot,
    RunResult,
    difference,
    find_exact,
    logs_tail,
    remove_container,
    run_detached,
    run_to_completion,
    snapshot,
)
from tools.docker_engine.health import Health, docker_config_paths, image_has_healthcheck, wait_healthy
from tools.docker_engine.images import (
    BuiltImage,
    Logger,
    build_image,
    login,
    pull,
    push,
    registry_digest,
    tag,
)
from tools.docker_engine.references import (
    RegistryAuth,
    auth_for,
    full_repository,
    reference_host,
    registry_host,
    same_registry_host,
    split_reference,
    validate_digest,
    validate_image_path,
    validate_repository,
    validate_tag,
)
from tools.docker_engine.translate import api_text, registry_error
from tools.http_check import http_ok

_registry_error = registry_error  # the former private name (tests classify registry texts with it)

__all__ = [
    "BuiltImage",
    "ContainerRun",
    "ContainerSnapshot",
    "Health",
    "Logger",
    "RegistryAuth",
    "RunResult",
    "api_text",
    "auth_for",
    "build_image",
    "difference",
    "docker_config_paths",
    "find_exact",
    "full_repository",
    "http_ok",
    "image_has_healthcheck",
    "login",
    "logs_tail",
    "pull",
    "push",
    "reference_host",
    "registry_digest",
    "registry_error",
    "registry_host",
    "remove_container",
    "run_detached",
    "run_to_completion",
    "same_registry_host",
    "snapshot",
    "split_reference",
    "tag",
    "validate_digest",
    "validate_image_path",
    "validate_repository",
    "validate_tag",
    "wait_healthy",
]
