"""What every Terraform task builds first: the backend block, the environment for Terraform (AWS keys as
secret environment only; the endpoint, when set, switches the stack's provider to the sandbox through
TF_VAR_aws_endpoint), a Runner for a workspace, an initialised workspace, and an S3 client for the state
bucket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blocks import TerraformBackend, resolve
from tools import terraform as tf
from tools.process import default_logger
from tools.terraform import Workspace

__all__ = ["deadlines", "runner_for", "state_bucket", "state_key", "terraform_context"]


def terraform_context(
    backend_block: str, aws_block: str
) -> tuple[TerraformBackend, dict[str, str], dict[str, str]]:
    backend = resolve.terraform_backend(backend_block)
    env, secret_env = resolve.aws_env(aws_block, backend.region)
    env["TF_VAR_aws_region"] = env.get("AWS_REGION", "")
    env["TF_VAR_aws_endpoint"] = resolve.aws_endpoint(aws_block)
    return backend, env, secret_env


def deadlines(backend: TerraformBackend) -> tf.Deadlines:
    return tf.Deadlines(
        plan_seconds=backend.plan_timeout_seconds,
        apply_seconds=backend.apply_timeout_seconds,
        plan_stop_seconds=backend.plan_stop_seconds,
        apply_stop_seconds=backend.apply_stop_seconds,
    )


def runner_for(
    workspace: Workspace, backend_block: str, aws_block: str
) -> tuple[tf.Runner, TerraformBackend]:
    backend, env, secret_env = terraform_context(backend_block, aws_block)
    runner = tf.Runner(
        workspace, env=env, secret_env=secret_env, deadlines=deadlines(backend), logger=default_logger()
    )
    return runner, backend


def init_workspace(
    stack: str, variables: Mapping[str, str] | None, key: str, backend_block: str, aws_block: str
) -> tuple[Workspace, tf.Runner, TerraformBackend]:
    """A private workspace of `stack` with `variables`, `terraform init` done against the state `key`;
    the workspace is removed again if the init fails. The caller removes it when done."""
    workspace = tf.prepare_workspace(stack, variables, key)
    try:
        runner, backend = runner_for(workspace, backend_block, aws_block)
        config = tf.backend_config(backend.bucket, key, backend.region, backend.endpoint_url)
        tf.init(runner, config, backend.lock_timeout_seconds)
    except BaseException:
        tf.remove_workspace(workspace)
        raise
    return workspace, runner, backend


def state_key(backend: TerraformBackend, stack: str) -> str:
    return f"{backend.key_prefix}{stack}/terraform.tfstate"


def state_bucket(backend_block: str, aws_block: str, stack: str) -> tuple[Any, TerraformBackend, str]:
    """An S3 client for the state bucket (prefect-aws caches it per credentials in this process), the
    backend, and the stack's state key."""
    backend = resolve.terraform_backend(backend_block)
    creds = resolve.aws_credentials(aws_block)
    params = creds.aws_client_parameters.model_copy(update={"endpoint_url": backend.endpoint_url or None})
    s3 = creds.model_copy(update={"aws_client_parameters": params}).get_client("s3")
    return s3, backend, state_key(backend, stack)
