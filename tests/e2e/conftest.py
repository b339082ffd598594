"""Fixtures shared by the e2e Terraform tests (rollout, approval)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.blocks import save_backend


@pytest.fixture
def backend_block(blocks, sandbox_env) -> str:
    """A Terraform backend block with a state key prefix of its own, so tests never share state."""
    name = f"tf-backend-e2e-{uuid.uuid4().hex[:8]}"
    return save_backend(sandbox_env, name, f"tests/{name}/")


@pytest.fixture
def ec2(sandbox_env):
    return boto3.client("ec2", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
