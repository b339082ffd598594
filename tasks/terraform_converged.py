"""Converged tasks: skip Terraform when the last apply's inputs and state still hold and AWS agrees;
record that state after an apply; tell detect-drift what the last apply was (see
tools/terraform_converged.py for the record and the checks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK, TerraformBackend, resolve
from tasks.terraform import ApplyResult
from tasks.terraform_context import state_bucket as _state_bucket
from tasks.terraform_context import state_key
from tools import aws as aws_tool
from tools import terraform_converged as conv
from tools.errors import AwsError, retry_if_transient
from tools.process import default_logger
from tools.terraform_converged import ConvergedRecord, StateFacts

__all__ = ["LastApply", "converged_outputs", "last_apply", "record_converged"]


def _fingerprint(stack: str, variables: Mapping[str, str], backend: TerraformBackend, aws_block: str) -> str:
    aws = resolve.aws_credentials(aws_block)
    context = {
        "bucket": backend.bucket,
        "state_key": state_key(backend, stack),
        "region": aws.region_name or backend.region,
        "aws_endpoint": aws.aws_client_parameters.endpoint_url or "",
    }
    return conv.stack_fingerprint(stack, variables, context)


@task(name="terraform-converged", cache_policy=NO_CACHE, task_run_name="converged? {stack}")
def converged_outputs(
    stack: str,
    variables: dict[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> ApplyResult | None:
    """The state's outputs when Terraform has nothing to do: these exact inputs (stack files, variables,
    backend) were applied last, no lock is held, the state is the one that apply left, and AWS still has
    what that state says about the stack's launch templates and auto scaling groups (an apply whose state
    write was lost leaves AWS ahead of the state). None otherwise, and the caller plans as usual."""
    log = default_logger()
    s3, backend, key = _state_bucket(backend_block, aws_block, stack)
    try:
        if aws_tool.read_object(s3, backend.bucket, f"{key}.tflock") is not None:
            return None
        raw_record = aws_tool.read_object(s3, backend.bucket, key + conv.CONVERGED_SUFFIX)
        if raw_record is None:
            return None
        record = ConvergedRecord.model_validate_json(raw_record)
        raw_state = aws_tool.read_object(s3, backend.bucket, key)
        head = conv.state_head(raw_state)
    except (AwsError, ValueError) as exc:  # a plan decides then (and reports an unreachable backend)
        log.warning("converged check of %s skipped: %s", stack, exc)
        return None
    fingerprint = _fingerprint(stack, variables or {}, backend, aws_block)
    if head is None or not conv.is_converged(record, fingerprint, head):
        return None
    recorded = conv.state_facts(raw_state)
    try:
        differences = conv.fact_differences(recorded, _aws_facts(recorded, aws_block))
    except AwsError as exc:
        log.warning("converged record of %s not trusted: AWS could not be read (%s); planning", stack, exc)
        return None
    if differences:
        log.warning(
            "converged record of %s not trusted: AWS differs from the state (%s); planning",
            stack,
            "; ".join(differences),
        )
        return None
    return ApplyResult(stack=stack, outputs=head.outputs)


def _aws_facts(recorded: StateFacts, aws_block: str) -> StateFacts:
    """The same facts as `recorded`, read from AWS now."""
    if recorded.empty:
        return StateFacts()
    from tasks.aws import clients

    ec2, autoscaling = clients(aws_block, "ec2", "autoscaling")
    return StateFacts(
        launch_templates=aws_tool.launch_template_facts(
            ec2, [lt.launch_template_id for lt in recorded.launch_templates]
        ),
        auto_scaling_groups=aws_tool.auto_scaling_group_facts(
            autoscaling, [g.name for g in recorded.auto_scaling_groups]
        ),
    )


@task(name="terraform-record-converged", cache_policy=NO_CACHE, task_run_name="record converged {stack}")
def record_converged(
    stack: str,
    variables: dict[str, str] | None = None,
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> ConvergedRecord | None:
    """After an apply or an empty plan with these inputs: note the state it left (lineage, serial) and
    the variables (non-secret; detect-drift plans with them)."""
    from prefect.runtime import flow_run

    s3, backend, key = _state_bucket(backend_block, aws_block, stack)
    try:
        head = conv.state_head(aws_tool.read_object(s3, backend.bucket, key))
        if head is None:
            return None
        record = ConvergedRecord(
            fingerprint=_fingerprint(stack, variables or {}, backend, aws_block),
            lineage=head.lineage,
            serial=head.serial,
            variables=dict(variables or {}),
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            flow_run=str(flow_run.id or ""),
        )
        body = record.model_dump_json().encode()
        aws_tool.write_object(s3, backend.bucket, key + conv.CONVERGED_SUFFIX, body)
    except AwsError as exc:  # the apply is done; without a record the next run plans
        default_logger().warning("could not record %s as converged: %s", stack, exc)
        return None
    return record


class LastApply(BaseModel):
    """What is known of a stack's last apply: whether it is deployed (a state with resources) and the
    converged record of that apply (None when there is none: applied outside apply-stack, or before
    records kept variables)."""

    stack: str
    deployed: bool
    record: ConvergedRecord | None = None
    facts: conv.StateFacts = Field(default_factory=conv.StateFacts, description="its LTs and ASGs, per state")


@task(
    name="terraform-last-apply",
    retries=2,
    retry_delay_seconds=3,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    task_run_name="last apply {stack}",
)
def last_apply(stack: str, backend_block: str = TF_BACKEND_BLOCK, aws_block: str = AWS_BLOCK) -> LastApply:
    """Read the stack's state and converged record from the backend (read-only, no lock)."""
    s3, backend, key = _state_bucket(backend_block, aws_block, stack)
    raw_state = aws_tool.read_object(s3, backend.bucket, key)
    deployed = bool(raw_state) and bool(_resources(raw_state))
    raw_record = aws_tool.read_object(s3, backend.bucket, key + conv.CONVERGED_SUFFIX) if deployed else None
    try:
        record = ConvergedRecord.model_validate_json(raw_record) if raw_record else None
    except ValueError as exc:
        default_logger().warning("converged record of %s unreadable: %s", stack, exc)
        record = None
    return LastApply(stack=stack, deployed=deployed, record=record, facts=conv.state_facts(raw_state))


def _resources(raw_state: bytes) -> list[Any]:
    try:
        return list(json.loads(raw_state).get("resources") or [])
    except (ValueError, AttributeError):
        return [None]  # not readable as a state: something is there, let the plan say what
