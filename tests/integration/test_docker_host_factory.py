"""blocks.docker_host.docker_client: every field of the DockerHost block reaches the client, and a
plaintext tcp:// engine is refused before any call when secrets would be sent to it (issue 15.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect_docker import DockerHost

from blocks.docker_host import docker_client, is_plaintext_tcp
from tools.errors import InvalidInput

CLOSED = "tcp://127.0.0.1:9"  # nothing listens: any call would be a connection error, not InvalidInput


def test_plaintext_tcp_is_refused_before_any_call_when_secrets_are_sent() -> None:
    with pytest.raises(InvalidInput, match="without TLS") as caught:
        docker_client(DockerHost(base_url=CLOSED), sends_secrets=True)
    assert "devops_allow_plaintext" in str(caught.value) and CLOSED in str(caught.value)


def test_plaintext_tcp_without_secrets_or_explicitly_allowed_builds_a_client() -> None:
    client = docker_client(DockerHost(base_url=CLOSED, version="1.41"))
    assert client.api.base_url == "http://127.0.0.1:9"
    allowed = DockerHost(base_url=CLOSED, version="1.41", client_kwargs={"devops_allow_plaintext": True})
    client = docker_client(allowed, sends_secrets=True)  # the flag is stripped, not passed to docker
    assert client.api.base_url == "http://127.0.0.1:9"
    with pytest.raises(InvalidInput, match="true or false"):
        docker_client(DockerHost(base_url=CLOSED, client_kwargs={"devops_allow_plaintext": "yes"}))


def test_tls_fields_of_the_block_reach_the_client(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for path in (ca, cert, key):
        path.write_text("not checked before a call\n")
    host = DockerHost(
        base_url="tcp://docker.example.internal:2376",
        version="1.41",
        timeout=17,
        client_kwargs={"tls": {"ca_cert": str(ca), "client_cert": [str(cert), str(key)], "verify": True}},
    )
    client = docker_client(host, sends_secrets=True)  # TLS: not refused
    assert client.api.base_url == "https://docker.example.internal:2376"
    assert client.api.cert == (str(cert), str(key))
    assert client.api.verify == str(ca)
    assert client.api.timeout == 17
    assert client.api._version == "1.41"
    with pytest.raises(InvalidInput, match="unknown keys"):
        docker_client(DockerHost(base_url=CLOSED, client_kwargs={"tls": {"ca": "x"}}))


def test_unix_engine_with_pool_size_and_timeout(sandbox_env: dict[str, str]) -> None:
    """The real sandbox engine through a block with every field set."""
    host = DockerHost(base_url=sandbox_env["DOCKER_HOST"], version="auto", timeout=42, max_pool_size=3)
    client = docker_client(host, sends_secrets=True)  # unix:// is never refused
    try:
        assert client.ping()
        assert client.api.timeout == 42
        assert client.api._custom_adapter.max_pool_size == 3
    finally:
        client.close()


@pytest.mark.parametrize(
    "url, kwargs, plaintext",
    [
        ("tcp://10.0.0.1:2375", {}, True),
        ("http://10.0.0.1:2375", {}, True),
        ("tcp://10.0.0.1:2376", {"tls": True}, False),
        ("unix:///var/run/docker.sock", {}, False),
        ("ssh://deploy@host", {}, False),
    ],
)
def test_what_counts_as_plaintext(url: str, kwargs: dict, plaintext: bool) -> None:
    assert is_plaintext_tcp(url, kwargs) is plaintext
