"""Replacing an app's container without losing its data, and putting the previous one back.

    set_aside       the container named APP is stopped and renamed APP-devops-previous (kept, with its
                    volumes and its whole configuration); its image is pinned by a tag
                    (<repo>:devops-previous-<app>) so no prune removes it; its mounts are returned
    start_new       the new container gets the previous one's mounts (named and anonymous volumes, binds)
    bring_back      the failed new container is removed (its volumes kept) and the previous one renamed
                    back and started: the same container, so the same mounts, networks, limits, labels,
                    restart policy, environment, ports and command; AppDown when that is impossible
    discard         once the new container is healthy, the previous one is removed, its volumes kept

An app container is never removed with its volumes (`docker rm` without -v). A replace interrupted at any
point (the flow process killed or cancelled) is picked up by the next run: a set-aside container without
a container named APP, or beside one that was created but never started (the run stopped between
`docker create` and `docker start`), is what served last: the never-started one is removed, the set-aside
one renamed back first and replaced as usual, so its data, its configuration and its image pin carry over.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import docker
import docker.errors

from tools.docker_engine import ContainerRun, Logger, find_exact, remove_container, run_detached
from tools.errors import AppDown
from tools.process import default_logger
from tools.redact import redact

PREVIOUS_SUFFIX = "-devops-previous"
PIN_PREFIX = "devops-previous-"
STOP_TIMEOUT = 10  # seconds the app gets for SIGTERM before SIGKILL, as `docker stop`


def previous_name(app: str) -> str:
    return f"{app}{PREVIOUS_SUFFIX}"


def pin_tag(app: str) -> str:
    """`devops-previous-<app>`, within the 128 characters of a tag (long names end in a hash)."""
    tag = f"{PIN_PREFIX}{app}"
    if len(tag) > 128:
        tag = f"{tag[:110]}-{hashlib.sha256(app.encode()).hexdigest()[:16]}"
    return tag


def _repository(image_ref: str) -> str:
    """The repository of `repo@sha256:..`, `repo:tag` or `repo` (a registry host may carry a port)."""
    ref = image_ref.partition("@")[0]
    head, _, last = ref.rpartition("/")
    if ":" in last:
        last = last.partition(":")[0]
    repo = f"{head}/{last}" if head else last
    return repo if repo and not repo.startswith("sha256") else "devops-flows/previous"


@dataclass
class SetAside:
    """What deploy-app needs after the set-aside: the mounts to carry, the restore target."""

    previous_id: str | None = None
    pinned: str | None = None
    mounts: dict[str, dict[str, str]] = field(default_factory=dict)
    recovered: bool = False  # a set-aside container of an interrupted run was renamed back first


def carried_mounts(container) -> dict[str, dict[str, str]]:  # noqa: ANN001 - docker Container
    """The container's volumes (named and anonymous, by volume name) and bind mounts, as `volumes=`."""
    out: dict[str, dict[str, str]] = {}
    for mount in container.attrs.get("Mounts") or []:
        source = mount.get("Name") if mount.get("Type") == "volume" else mount.get("Source")
        if mount.get("Type") in ("volume", "bind") and source:
            out[source] = {"bind": mount["Destination"], "mode": "rw" if mount.get("RW", True) else "ro"}
    return out


def pin_image(client: docker.DockerClient, container, app: str) -> str:  # noqa: ANN001
    """Tag the container's image `<repo>:devops-previous-<app>`: a prune keeps a tagged image."""
    repo = _repository(str((container.attrs.get("Config") or {}).get("Image") or ""))
    tag = pin_tag(app)
    client.api.tag(container.attrs["Image"], repo, tag, force=True)
    return f"{repo}:{tag}"


def never_started(container) -> bool:  # noqa: ANN001 - docker Container
    """Created and never started: a replace stopped between `docker create` and `docker start`."""
    state = container.attrs.get("State") or {}
    return state.get("Status") == "created" and str(state.get("StartedAt") or "").startswith("0001-")


def set_aside(client: docker.DockerClient, app: str, log: Logger | None = None) -> SetAside:
    """Stop the container named `app`, pin its image and rename it; returns its mounts for the new one."""
    log = log or default_logger()
    current, leftover = find_exact(client, app), find_exact(client, previous_name(app))
    recovered = False
    if leftover and current and never_started(current[0]):  # the new container of an interrupted replace
        log.warning(
            "%s: %s was created but never started by an interrupted deploy; removing it (volumes kept)",
            app,
            current[0].id[:12],
        )
        remove_container(client, current[0].id, log, volumes=False)
        current = []
    if leftover and not current:  # an interrupted replace: what served last is the set-aside one
        log.warning("%s: found %s from an interrupted deploy; renaming it back", app, previous_name(app))
        client.api.rename(leftover[0].id, app)
        current, leftover, recovered = find_exact(client, app), [], True
    for stale in leftover:  # the container named app serves; an older set-aside one is obsolete
        log.info("removing the obsolete %s (%s), keeping its volumes", stale.name, stale.id[:12])
        remove_container(client, stale.id, log, volumes=False)
    if not current:
        return SetAside(recovered=recovered)
    old = current[0]
    pinned = pin_image(client, old, app)
    mounts = carried_mounts(old)
    log.info(
        "stopping %s (%s); kept as %s until the new one is healthy; image pinned as %s; carrying %s",
        app,
        old.id[:12],
        previous_name(app),
        pinned,
        sorted(m["bind"] for m in mounts.values()) or "no mounts",
    )
    client.api.stop(old.id, timeout=STOP_TIMEOUT)
    client.api.rename(old.id, previous_name(app))
    return SetAside(previous_id=old.id, pinned=pinned, mounts=mounts, recovered=recovered)


def start_new(
    client: docker.DockerClient,
    spec: ContainerRun,
    mounts: dict[str, dict[str, str]],
    log: Logger | None = None,
) -> str:
    """Run the new container with the previous one's mounts (the spec's own mounts win)."""
    return run_detached(client, replace(spec, volumes={**mounts, **dict(spec.volumes)}), logger=log)


def bring_back(
    client: docker.DockerClient,
    app: str,
    new_id: str | None,
    why: str,
    log: Logger | None = None,
) -> str:
    """Remove the failed new container (volumes kept), rename the previous one back and start it.

    AppDown (the app is down, and why) when the previous container is gone or does not start."""
    log = log or default_logger()
    if new_id:
        remove_container(client, new_id, log, volumes=False)
    for other in find_exact(client, app):  # anything else that took the name meanwhile
        remove_container(client, other.id, log, volumes=False)
    previous = find_exact(client, previous_name(app))
    if not previous:
        raise AppDown(
            f"{app} is DOWN: {why}; the previous container {previous_name(app)} no longer exists, so "
            "nothing could be restored",
            hint="deploy a known-good image again; the app's volumes were kept",
        )
    try:
        client.api.rename(previous[0].id, app)
        client.api.start(previous[0].id)
    except docker.errors.APIError as exc:
        raise AppDown(
            f"{app} is DOWN: {why}; restoring the previous container failed",
            tail=[redact(str(getattr(exc, "explanation", None) or exc))],
            hint="deploy a known-good image again; the app's volumes were kept",
        ) from None
    return previous[0].id


def discard(client: docker.DockerClient, app: str, log: Logger | None = None) -> list[str]:
    """Remove the set-aside container (its volumes are kept: the new container uses them)."""
    removed = []
    for container in find_exact(client, previous_name(app)):
        remove_container(client, container.id, log, volumes=False)
        removed.append(container.id)
    return removed
