"""Terraform tasks: plan a stack (kept for apply or thrown away), apply a saved plan, read outputs.

Blocks are loaded inside the tasks: the TerraformBackend (state bucket, key prefix, S3 endpoint, lock
timeout) and the AwsCredentials (keys go to Terraform as environment only; the endpoint, when set,
switches the stack's provider to the sandbox through TF_VAR_aws_endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK, AwsCredentials, TerraformBackend
from tools import terraform as tf
from tools.errors import retry_if_transient
from tools.process import default_logger
from tools.redact import register_secret
from tools.terraform import OutputValue, PlanSummary, Workspace

__all__ = [
    "ApplyResult",
    "PlanSummary",
    "apply_plan",
    "destroy_stack",
    "discard_plan",
    "ensure_stack_limit",
    "plan_stack",
    "stack_limit_name",
]


class ApplyResult(BaseModel):
    stack: str
    outputs: dict[str, OutputValue] = Field(default_factory=dict)

    def value(self, name: str):  # noqa: ANN201 - any JSON value
        out = self.outputs.get(name)
        return out.value if out else None


def _context(backend_block: str, aws_block: str) -> tuple[TerraformBackend, dict[str, str], dict[str, str]]:
    backend = TerraformBackend.load(backend_block)
    aws = AwsCredentials.load(aws_block)
    region = aws.region_name or backend.region
    secret_env: dict[str, str] = {}
    if aws.aws_access_key_id:
        secret_env["AWS_ACCESS_KEY_ID"] = register_secret(aws.aws_access_key_id) or ""
    if aws.aws_secret_access_key:
        secret_env["AWS_SECRET_ACCESS_KEY"] = (
            register_secret(aws.aws_secret_access_key.get_secret_value()) or ""
        )
    if aws.aws_session_token:
        secret_env["AWS_SESSION_TOKEN"] = register_secret(aws.aws_session_token.get_secret_value()) or ""
    endpoint = aws.aws_client_parameters.endpoint_url or ""
    env = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "TF_VAR_aws_region": region,
        "TF_VAR_aws_endpoint": endpoint,
    }
    if aws.profile_name:
        env["AWS_PROFILE"] = aws.profile_name
    return backend, env, secret_env


def _runner(workspace: Workspace, backend_block: str, aws_block: str) -> tuple[tf.Runner, TerraformBackend]:
    backend, env, secret_env = _context(backend_block, aws_block)
    return tf.Runner(workspace, env=env, secret_env=secret_env, logger=default_logger()), backend


def state_key(backend: TerraformBackend, stack: str) -> str:
    return f"{backend.key_prefix}{stack}/terraform.tfstate"


def plan_now(
    stack: str,
    variables: Mapping[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
    keep_plan: bool = False,
    destroy: bool = False,
) -> PlanSummary:
    """init + plan + show in a private workspace (the body of `plan_stack`, callable outside a task)."""
    backend = TerraformBackend.load(backend_block)
    stack_dir = tf.resolve_stack(stack)
    stack = stack_dir.relative_to(tf.TERRAFORM_DIR).as_posix()
    workspace = tf.prepare_workspace(stack, variables, state_key(backend, stack))
    try:
        runner, backend = _runner(workspace, backend_block, aws_block)
        config = tf.backend_config(backend.bucket, workspace.state_key, backend.region, backend.endpoint_url)
        tf.init(runner, config, backend.lock_timeout_seconds)
        tf.plan(runner, backend.lock_timeout_seconds, destroy=destroy)
        summary = tf.summarize_plan(stack, tf.show_plan(runner))
    except BaseException:
        tf.remove_workspace(workspace)
        raise
    if keep_plan:
        summary.workspace = workspace
    else:
        tf.remove_workspace(workspace)
    default_logger().info(
        "plan %s: %s",
        stack,
        f"{summary.add} to add, {summary.change} to change, {summary.destroy} to destroy"
        if summary.has_changes
        else "no changes",
    )
    return summary


@task(
    name="terraform-plan",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    task_run_name="plan {stack}",
)
def plan_stack(
    stack: str,
    variables: dict[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
    keep_plan: bool = False,
) -> PlanSummary:
    """`terraform init` + `plan` of a stack under infra/terraform; never applies.

    With keep_plan=True the workspace holding the saved plan is kept for `apply_plan` (its location is in
    `summary.workdir`); otherwise it is deleted. Plans are read-only, so transient errors are retried.
    """
    return plan_now(stack, variables, backend_block, aws_block, keep_plan=keep_plan)


@task(name="terraform-apply", cache_policy=NO_CACHE, task_run_name="apply {summary.stack}")
def apply_plan(
    summary: PlanSummary, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK
) -> ApplyResult:
    """Apply exactly the saved plan of `summary` (never a fresh plan; never retried), then read outputs."""
    if summary.workspace is None:
        raise ValueError("apply_plan needs a summary from plan_stack(keep_plan=True)")
    workspace = summary.workspace
    try:
        runner, backend = _runner(workspace, backend_block, aws_block)
        tf.apply(runner, backend.lock_timeout_seconds)
        return ApplyResult(stack=summary.stack, outputs=tf.outputs(runner))
    finally:
        tf.remove_workspace(workspace)


@task(name="terraform-discard-plan", cache_policy=NO_CACHE)
def discard_plan(summary: PlanSummary) -> None:
    """Delete the workspace of a plan that will not be applied."""
    if summary.workspace is not None:
        tf.remove_workspace(summary.workspace)


def destroy_now(
    stack: str,
    variables: Mapping[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> None:
    backend = TerraformBackend.load(backend_block)
    workspace = tf.prepare_workspace(
        stack, variables, state_key(backend, tf.resolve_stack(stack).relative_to(tf.TERRAFORM_DIR).as_posix())
    )
    try:
        runner, backend = _runner(workspace, backend_block, aws_block)
        config = tf.backend_config(backend.bucket, workspace.state_key, backend.region, backend.endpoint_url)
        tf.init(runner, config, backend.lock_timeout_seconds)
        tf.destroy(runner, backend.lock_timeout_seconds)
    finally:
        tf.remove_workspace(workspace)


@task(name="terraform-destroy", cache_policy=NO_CACHE, task_run_name="destroy {stack}")
def destroy_stack(
    stack: str,
    variables: dict[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> None:
    """`terraform apply -destroy -auto-approve` (python-terraform's destroy adds the rejected `-force`)."""
    destroy_now(stack, variables, backend_block, aws_block)


def stack_limit_name(stack: str) -> str:
    return f"tf-stack-{tf.slug(stack)}"


@task(name="ensure-stack-limit", cache_policy=NO_CACHE)
def ensure_stack_limit(stack: str) -> str:
    """Create the global concurrency limit `tf-stack-<slug>` (limit 1) if it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = stack_limit_name(stack)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
    return name
