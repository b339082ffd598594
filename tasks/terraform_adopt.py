"""Adopt the orphans of a killed first apply (tools/terraform_adopt.py decides which): each object the
plan wants to create that already exists in AWS is imported into the state, under the state lock and our
holder record, with a warning; the caller then plans again and the run converges."""

from __future__ import annotations

from typing import Any

from tasks.aws import clients
from tasks.terraform_lock import holding_lock
from tools import terraform as tf
from tools import terraform_adopt as adopt
from tools.process import default_logger

__all__ = ["adopt_orphans"]


def adopt_orphans(
    runner: tf.Runner, plan: dict[str, Any], lock_timeout: int, backend_block: str, aws_block: str
) -> list[adopt.Adoption]:
    """Import every existing object the plan `plan` (show -json) would create; returns the adoptions."""
    wanted = adopt.wanted_creates(plan)
    if not wanted:
        return []
    ec2, autoscaling = clients(aws_block, "ec2", "autoscaling")
    chosen = adopt.choose_adoptions(wanted, adopt.existing_objects(ec2, autoscaling, wanted))
    stack = runner.workspace.stack
    for adoption in chosen:
        default_logger().warning(
            "adopting %s into the state of %s: it exists in AWS but not in the state (left by an apply "
            "killed before its state write)",
            adoption.describe(),
            stack,
        )
        with holding_lock(stack, backend_block, aws_block):
            tf.import_resource(runner, adoption.address, adoption.id, lock_timeout)
    return chosen
