"""Containers on the Docker engine: a job run to completion (logs streamed, always removed), an app run
detached, a container's configuration snapshot and its difference from what a spec would start."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from tools.docker_engine.translate import api_text, run_errors
from tools.errors import TAIL_LINES, ProcessTimeout
from tools.process import default_logger
from tools.redact import redact, register_secret

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - docker's default host ip of a published port, compared, never bound

Logger = logging.Logger | logging.LoggerAdapter


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
    except Exception:  # noqa: BLE001, S110 - the container went away; the main loop notices
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
        with run_errors(spec.image, tail):
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
        if "already in progress" not in api_text(exc):
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
            (b.get("HostIp") or ALL_INTERFACES, int(b["HostPort"]))
            for b in bindings or []
            if b.get("HostPort")
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
        key: sorted((ip or ALL_INTERFACES, int(port)) for ip, port in (v if isinstance(v, list) else [v]))
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
    with run_errors(spec.image, job=False):
        container = client.containers.run(detach=True, image=spec.image, **spec.kwargs())
    return container.id


def logs_tail(client: docker.DockerClient, container_id: str, lines: int = TAIL_LINES) -> list[str]:
    try:
        raw = client.api.logs(container_id, stdout=True, stderr=True, tail=lines)
    except docker.errors.APIError:
        return []
    return [redact(line) for line in raw.decode("utf-8", errors="replace").splitlines()]
