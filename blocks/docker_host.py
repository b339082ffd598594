"""The one Docker client factory: every Docker client of the flows comes from a DockerHost block here.

It honours all the block's fields, as `DockerHost.get_client()` does (base_url, version, timeout,
max_pool_size, client_kwargs), with two additions:

- `client_kwargs["tls"]` may be a JSON object (a block stores JSON, not a `docker.tls.TLSConfig`):
  `{"ca_cert": PATH, "client_cert": [CERT, KEY], "verify": true}`; it becomes a TLSConfig.
- a `tcp://` engine without TLS is refused (InvalidInput, before any call) for flows that send registry
  credentials or app secrets to the daemon, unless the block says so explicitly:
  `client_kwargs {"devops_allow_plaintext": true}` (stripped before the client is built).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from tools.docker_engine import RegistryAuth
from tools.errors import InvalidInput

if TYPE_CHECKING:
    import docker
    from prefect_docker import DockerHost

ALLOW_PLAINTEXT = "devops_allow_plaintext"
DEFAULT_TIMEOUT = 300  # seconds per API call when the block leaves timeout empty (docker's own is 60)
_TLS_KEYS = {"ca_cert", "client_cert", "verify", "ssl_version", "assert_hostname"}


def _tls_config(value: Any) -> Any:
    import docker.tls

    if not isinstance(value, dict):
        return value
    unknown = set(value) - _TLS_KEYS
    if unknown:
        raise InvalidInput(
            f"DockerHost client_kwargs.tls has unknown keys {sorted(unknown)}; valid: {sorted(_TLS_KEYS)}"
        )
    kwargs = dict(value)
    if isinstance(kwargs.get("client_cert"), list):
        kwargs["client_cert"] = tuple(kwargs["client_cert"])
    return docker.tls.TLSConfig(**kwargs)


def client_kwargs(host: DockerHost) -> tuple[str | None, dict[str, Any], bool]:
    """(base_url, the DockerClient keyword arguments, plaintext allowed) of a DockerHost block."""
    extra = dict(host.client_kwargs or {})
    allow = extra.pop(ALLOW_PLAINTEXT, False)
    if not isinstance(allow, bool):
        raise InvalidInput(f"DockerHost client_kwargs.{ALLOW_PLAINTEXT} must be true or false, got {allow!r}")
    kwargs = {
        "version": host.version,
        "timeout": host.timeout if host.timeout is not None else DEFAULT_TIMEOUT,
        "max_pool_size": host.max_pool_size,
        **extra,
    }
    if "tls" in kwargs:
        kwargs["tls"] = _tls_config(kwargs["tls"])
    return host.base_url, {k: v for k, v in kwargs.items() if v is not None}, allow


def is_plaintext_tcp(base_url: str | None, kwargs: dict[str, Any]) -> bool:
    """A tcp:// (or http://) engine reached without TLS. From the environment when base_url is None."""
    url = base_url or os.environ.get("DOCKER_HOST") or ""
    if not url.startswith(("tcp://", "http://")):
        return False
    if base_url is None and os.environ.get("DOCKER_TLS_VERIFY"):
        return False
    return not kwargs.get("tls")


def docker_client(host: DockerHost | str, *, sends_secrets: bool = False) -> docker.DockerClient:
    """A docker SDK client for a DockerHost block (or its name).

    sends_secrets: the caller sends registry credentials or app secrets to the daemon; a plaintext
    tcp:// engine is then refused unless the block allows it explicitly.
    """
    import docker
    from prefect_docker import DockerHost

    from blocks import resolve

    block = resolve.load(DockerHost, host) if isinstance(host, str) else host
    base_url, kwargs, allow = client_kwargs(block)
    if sends_secrets and not allow and is_plaintext_tcp(base_url, kwargs):
        where = base_url or os.environ.get("DOCKER_HOST")
        raise InvalidInput(
            f"the Docker engine {where} is reached over tcp:// without TLS, and this flow sends registry "
            "credentials or app secrets to it: configure TLS in the DockerHost block "
            '(client_kwargs {"tls": {"ca_cert": ..., "client_cert": [cert, key], "verify": true}}), '
            "use unix:// or ssh://, or allow plaintext explicitly "
            f'(client_kwargs {{"{ALLOW_PLAINTEXT}": true}})'
        )
    if base_url is None:
        return docker.from_env(**kwargs)
    return docker.DockerClient(base_url=base_url, **kwargs)


def registry_auth(block_name: str) -> RegistryAuth:
    """The DockerRegistryCredentials block as daemon credentials (the password registered for redaction).
    They go only to their own registry: tools.docker_engine checks every reference against it."""
    from prefect_docker import DockerRegistryCredentials

    from blocks import resolve

    creds = resolve.load(DockerRegistryCredentials, block_name)
    return RegistryAuth(
        registry=creds.registry_url, username=creds.username, password=creds.password.get_secret_value()
    )
