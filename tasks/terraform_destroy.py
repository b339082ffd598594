"""Destroy a stack: `terraform apply -destroy -auto-approve` in a private workspace, under the state lock
and our holder record (tests and clean-ups; apply-stack never destroys)."""

from __future__ import annotations

from collections.abc import Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK, resolve
from tasks.terraform_context import init_workspace, state_key
from tasks.terraform_lock import holding_lock
from tools import terraform as tf

__all__ = ["destroy_now", "destroy_stack"]


def destroy_now(
    stack: str,
    variables: Mapping[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> None:
    backend = resolve.terraform_backend(backend_block)
    stack = tf.resolve_stack(stack).relative_to(tf.TERRAFORM_DIR).as_posix()
    workspace, runner, backend = init_workspace(
        stack, variables, state_key(backend, stack), backend_block, aws_block
    )
    try:
        with holding_lock(workspace.stack, backend_block, aws_block):
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
