"""Blocks the tests save: one builder each, so every test's blocks have the same shape."""

from __future__ import annotations

from typing import Any

from blocks import AwsClientParameters, AwsCredentials, TerraformBackend

REGION = "eu-central-1"


def save_backend(
    sandbox_env: dict[str, str],
    name: str,
    key_prefix: str,
    lock_timeout_seconds: int = 5,
    endpoint_url: str | None = None,
) -> str:
    """A TerraformBackend block on the sandbox's state bucket, with a state key prefix of the test's own
    (tests never share state); `endpoint_url` overrides the sandbox's S3 (a proxy in front of it).
    Returns the block's name."""
    TerraformBackend(
        bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
        region=REGION,
        key_prefix=key_prefix,
        endpoint_url=endpoint_url or sandbox_env["AWS_ENDPOINT_URL"],
        lock_timeout_seconds=lock_timeout_seconds,
    ).save(name, overwrite=True)
    return name


def save_aws(
    name: str,
    endpoint_url: str,
    secret_access_key: str = "testing",
    config: dict[str, Any] | None = None,
) -> str:
    """An AwsCredentials block for moto at `endpoint_url` (any key works); returns the block's name."""
    AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key=secret_access_key,
        region_name=REGION,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url, config=config),
    ).save(name, overwrite=True)
    return name
