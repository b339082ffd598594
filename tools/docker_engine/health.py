"""Whether a started container is healthy: Docker's HEALTHCHECK, an HTTP check or still running."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from tools.http_check import http_ok
from tools.process import default_logger
from tools.redact import redact

Logger = logging.Logger | logging.LoggerAdapter


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
