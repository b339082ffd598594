"""Fixtures shared by the e2e Terraform tests (rollout, approval)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from blocks import TerraformBackend


@pytest.fixture
def backend_block(blocks, sandbox_env) -> str:  # noqa: ANN001
    """A Terraform backend block with a state key prefix of its own, so tests never share state."""
    name = f"tf-backend-e2e-{uuid.uuid4().hex[:8]}"
    TerraformBackend(
        bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
        region=sandbox_env.get("AWS_DEFAULT_REGION", "eu-central-1"),
        key_prefix=f"tests/{name}/",
        endpoint_url=sandbox_env["AWS_ENDPOINT_URL"],
        lock_timeout_seconds=5,
    ).save(name, overwrite=True)
    return name


@pytest.fixture
def ec2(sandbox_env):  # noqa: ANN001, ANN201
    return boto3.client("ec2", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
