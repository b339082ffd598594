"""deploy-app's steps after the health check: restore the set-aside container, or discard it; and the
'app down' notification when the restore itself fails (tools.containers does the Docker work)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.docker_host import docker_client
from tasks.notify import notify
from tools import containers
from tools import docker_engine as engine
from tools.errors import NotificationFailed


@task(name="restore-previous", cache_policy=NO_CACHE)
def restore_previous(
    docker_host_block: str, app_name: str, new_container_id: str, why: str, had_previous: bool = True
) -> str:
    """Remove the unhealthy new container and bring the set-aside one back (same container: same
    mounts, networks, limits, labels, restart policy, environment, ports, command). AppDown otherwise.
    had_previous=False (a first deploy): only the new container is removed (its volumes kept)."""
    logger = get_run_logger()
    client = docker_client(docker_host_block)
    try:
        if not had_previous:
            engine.remove_container(client, new_container_id, logger, volumes=False)
            logger.warning("rolled back: %s had no previous container; the unhealthy one removed", app_name)
            return ""
        restored = containers.bring_back(client, app_name, new_container_id, why, logger)
    finally:
        client.close()
    logger.warning(
        "rolled back: %s restored (%s), the unhealthy %s removed",
        app_name,
        restored[:12],
        new_container_id[:12],
    )
    return restored


@task(name="discard-previous", cache_policy=NO_CACHE)
def discard_previous(docker_host_block: str, app_name: str) -> list[str]:
    """The new container is healthy: remove the set-aside one (its volumes stay with the new one)."""
    logger = get_run_logger()
    client = docker_client(docker_host_block)
    try:
        removed = containers.discard(client, app_name, logger)
    finally:
        client.close()
    logger.info("removed the previous container(s) %s, volumes kept", [r[:12] for r in removed] or "none")
    return removed


def notify_app_down(block_ref: str, app_name: str, message: str) -> bool:
    """Send 'app down'; a failed delivery is logged, never raised: the run fails with AppDown anyway."""
    try:
        return notify(block_ref, "app down", subject=f"devops-flows: {app_name} is DOWN", body=message)
    except NotificationFailed as exc:
        get_run_logger().error("%s", exc)
        return False
