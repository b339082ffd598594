"""deploy-app's tasks: the container replaced (the previous one restored on failure), the health check,
the deploy report."""

from __future__ import annotations

import re

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks.docker_host import registry_auth
from tasks.release.access import app_secrets, client_of
from tasks.release.models import (
    DeployParams,
    DeployResult,
    HealthResult,
)
from tools import containers
from tools import docker_engine as engine
from tools.errors import DeployFailed
from tools.redact import redact


# --- deploy-app -----------------------------------------------------------------------------------------
@task(name="replace-container")
def replace_container(params: DeployParams) -> dict:
    """Pull by digest, set the container named app_name aside (stopped, renamed, image pinned) and run the
    new one detached with its mounts, so named and anonymous volumes carry over.

    A container that already runs this image with this configuration (and is not unhealthy) is left
    alone, as `docker compose up` does, unless force_redeploy. The set-aside container is what
    restore-previous brings back, and what discard-previous removes (volumes kept) once the new one is
    healthy.
    """
    logger = get_run_logger()
    auth = registry_auth(params.registry_block) if params.registry_block else None
    auth = engine.auth_for(params.image_reference, auth)  # credentials go only to their registry
    secret_env = app_secrets(params.app_secrets_block)
    client = client_of(params.docker_host_block, sends_secrets=bool(auth or secret_env))
    try:
        if auth:
            engine.login(client, auth)
        image_id = engine.pull(client, params.image_reference, auth, logger=logger)
        old = engine.find_exact(client, params.app_name)
        repo, digest = engine.split_reference(params.image_reference)
        spec = engine.ContainerRun(
            image=params.image_reference,
            command=params.command,
            name=params.app_name,
            environment={**params.env, "PROJECT_ENV": params.environment, **secret_env},
            secret_names=sorted(secret_env),
            ports={p.docker_key(): (p.host_ip, p.host_port) for p in params.ports},
            labels={
                "devops-flows.app": params.app_name,
                "devops-flows.image": params.image_reference,
                "devops-flows.environment": params.environment,
                **params.labels,
            },
            restart_policy={"Name": "always"},
        )
        if len(old) == 1 and not params.force_redeploy:
            why = engine.difference(client, old[0], spec, image_id)
            if why is None:
                logger.info(
                    "%s (%s) already runs %s with this configuration: left running (force_redeploy "
                    "replaces it)",
                    params.app_name,
                    old[0].id[:12],
                    digest,
                )
                return {"container_id": old[0].id, "replaced": [], "image_id": image_id, "unchanged": True}
            logger.info("replacing %s (%s): %s", params.app_name, old[0].id[:12], why)
        aside = containers.set_aside(client, params.app_name, logger)
        try:
            container_id = containers.start_new(client, spec, aside.mounts, logger)
        except Exception as exc:
            if aside.previous_id:
                logger.warning("starting the new container failed: restoring %s", params.app_name)
                containers.bring_back(
                    client, params.app_name, None, f"the new container did not start: {exc}"
                )
            raise
        logger.info(
            "started %s (%s) from %s (image %s)", params.app_name, container_id[:12], digest, image_id[:19]
        )
        replaced = [aside.previous_id] if aside.previous_id else []
        return {"container_id": container_id, "replaced": replaced, "image_id": image_id, "unchanged": False}
    finally:
        client.close()


@task(name="health-check")
def check_health(params: DeployParams, container_id: str, replaced: bool = True) -> HealthResult:
    """Wait for the new container to be healthy; DeployFailed with its last log lines otherwise.
    replaced=False: the container was left running (up to date), so there is nothing to restore."""
    logger = get_run_logger()
    client = client_of(params.docker_host_block)
    try:
        source = params.health.source
        if source == "auto":
            if engine.image_has_healthcheck(client, params.image_reference):
                source = "docker"
            else:
                source = "http" if params.health.url else "running"
        if source == "none":
            return HealthResult(healthy=True, source="none", detail="not checked", checks=0, seconds=0)
        health = engine.wait_healthy(
            client,
            container_id,
            source,
            params.health.url,
            params.health.timeout_seconds,
            interval=params.health.interval_seconds,
            logger=logger,
        )
        result = HealthResult(**health.__dict__)
        if not health.healthy:
            then = (
                "restoring the previous container"
                if replaced
                else "it was left running (already this image and configuration; force_redeploy replaces it)"
            )
            raise DeployFailed(
                f"{params.app_name} ({container_id[:12]}) is not healthy: {health.detail}; {then}",
                tail=engine.logs_tail(client, container_id),
                hint="the container's last log lines are below",
            )
        logger.info("healthy after %.1fs (%s): %s", health.seconds, source, redact(health.detail))
        return result
    finally:
        client.close()


@task(name="deploy-report")
def deploy_report(params: DeployParams, result: DeployResult) -> None:
    """A markdown artifact of what runs now."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"deploy-{params.app_name}".lower()).strip("-")
    ports = ", ".join(result.ports) or "none"
    create_markdown_artifact(
        key=key[:100],
        description=f"deploy-app {params.app_name}",
        markdown="\n".join(
            [
                f"# {params.app_name} ({params.environment})",
                "",
                "| | |",
                "|---|---|",
                f"| image | `{result.image_reference}` |",
                f"| digest | `{result.image_reference.partition('@')[2]}` |",
                f"| container | `{result.container_id[:12]}` |",
                f"| ports | {ports} |",
                f"| health | {'healthy' if result.health.healthy else 'UNHEALTHY'} "
                f"via {result.health.source}: "
                f"{result.health.detail} ({result.health.seconds:.1f}s) |",
                f"| replaced | {', '.join(c[:12] for c in result.replaced) or 'nothing'}"
                f"{' (already up to date)' if result.unchanged else ''} |",
            ]
        ),
    )
