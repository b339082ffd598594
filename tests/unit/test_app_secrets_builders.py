"""AppSecrets.builder_images: which builder images may receive the app secrets (issue 15.6)."""

from __future__ import annotations

import pytest

from blocks import DEFAULT_SECRET_BUILDERS, AppSecrets
from tools.errors import InvalidInput


@pytest.mark.parametrize(
    "image, allowed",
    [
        ("hseeberger/scala-sbt:8u181_2.12.8_1.2.8", True),  # exact default
        ("hseeberger/scala-sbt:latest", False),  # another tag of an exact entry
        ("devops-flows/sbt-builder:test", True),  # any tag of a repository entry
        ("devops-flows/sbt-builder@sha256:" + "a" * 64, True),
        ("devops-flows/sbt-builder-evil:1", False),
        ("evil.io/devops-flows/sbt-builder:1", False),
        ("busybox", False),
    ],
)
def test_default_allowlist(image: str, allowed: bool) -> None:
    assert AppSecrets().allows_builder(image) is allowed


def test_a_builder_not_on_the_list_is_a_clear_error() -> None:
    block = AppSecrets(builder_images=["127.0.0.1:5000/builders/sbt:2"])
    assert block.allows_builder("127.0.0.1:5000/builders/sbt:2")
    with pytest.raises(InvalidInput, match="not allowed to receive the secrets") as caught:
        block.check_builder(DEFAULT_SECRET_BUILDERS[0], "app-secrets")
    assert "127.0.0.1:5000/builders/sbt:2" in str(caught.value)
