"""tools/docker_engine/translate.py: the docker SDK's errors as our error tree; a failed pull is
PullFailed."""

from __future__ import annotations

from typing import Any

# `import docker` first: Prefect leaves `docker` a lazy module, and importing the submodule first through
# it runs docker/errors.py twice (two APIError classes; Prefect's lazy_import documents the hazard).
import docker
import docker.errors
import pytest
import requests.exceptions

from tools import docker_engine as engine
from tools.docker_engine.translate import registry_error
from tools.errors import PullFailed, PushFailed, RegistryAuthError, RegistryError, ToolError

DIGEST = "sha256:" + "a" * 64
REFERENCE = f"127.0.0.1:5000/app@{DIGEST}"


class _Api:
    def __init__(self, fail: Exception | None = None, events: list[dict] | None = None) -> None:
        self.fail, self.events = fail, events or []

    def pull(self, *_args: Any, **_kwargs: Any) -> list[dict]:
        if self.fail:
            raise self.fail
        return self.events


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


def test_the_registry_errors_form_one_branch() -> None:
    assert issubclass(PushFailed, RegistryError) and issubclass(PullFailed, RegistryError)
    assert issubclass(RegistryError, ToolError) and not issubclass(PullFailed, PushFailed)


def test_a_registry_text_is_classified_for_the_operation() -> None:
    down = registry_error("dial tcp 127.0.0.1:1: connect: connection refused", "pull", failed=PullFailed)
    assert type(down) is PullFailed and down.transient
    assert type(registry_error("manifest unknown", "pull", failed=PullFailed)) is PullFailed
    assert isinstance(registry_error("unauthorized: authentication required", "pull"), RegistryAuthError)


@pytest.mark.parametrize(
    ("api", "expected", "transient"),
    [
        (_Api(docker.errors.APIError("manifest invalid: manifest invalid")), PullFailed, False),
        (_Api(requests.exceptions.ConnectionError("engine gone")), PullFailed, True),
        (
            _Api(events=[{"error": "received unexpected HTTP status: 500 Internal Server Error"}]),
            PullFailed,
            True,
        ),
        (_Api(events=[{"error": "unauthorized: authentication required"}]), RegistryAuthError, False),
    ],
)
def test_a_failed_pull_is_pull_failed(api: _Api, expected: type, transient: bool) -> None:
    auth = engine.RegistryAuth("127.0.0.1:5000", "devops", "s3cret-pull-pw")
    with pytest.raises(RegistryError) as caught:
        engine.pull(_Client(api), REFERENCE, auth)  # type: ignore[arg-type]
    assert type(caught.value) is expected, repr(caught.value)
    assert caught.value.transient is transient
    assert "s3cret-pull-pw" not in str(caught.value)


def test_an_anonymous_pull_refused_says_no_credentials_were_sent() -> None:
    auth = engine.RegistryAuth("registry.example.com", "devops", "s3cret-pull-pw")
    api = _Api(events=[{"error": "unauthorized: authentication required"}])
    with pytest.raises(RegistryAuthError, match="wants credentials and none were sent"):
        engine.pull(_Client(api), REFERENCE, auth)  # type: ignore[arg-type]
