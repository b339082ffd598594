"""The blocks a release task loads: a Docker client, the app's secrets."""

from __future__ import annotations

from docker import DockerClient

from blocks import AppSecrets, resolve
from blocks.docker_host import docker_client


# --- helpers --------------------------------------------------------------------------------------------
def client_of(block_name: str, sends_secrets: bool = False) -> DockerClient:
    """A Docker client from the DockerHost block `block_name` (see blocks.docker_host.docker_client)."""
    return docker_client(block_name, sends_secrets=sends_secrets)


def app_secrets(block_name: str | None, builder_image: str | None = None) -> dict[str, str]:
    """The AppSecrets values; for a builder, only when the block allows that builder image."""
    if not block_name:
        return {}
    block = resolve.load(AppSecrets, block_name)
    if builder_image is not None:
        block.check_builder(builder_image, block_name)
    return block.environment()
