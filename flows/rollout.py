"""ami-rollout: the devops-packer-xwiki Jenkins job. bake-image -> apply-stack(ami_id) -> verify.

If apply or verify fails after the plan changed the launch template, the previous AMI id is applied
again (the rollback) and the run fails."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK
from flows.apply import ApplyOutcome, Approval, StackRequest, apply
from flows.bake import BakeSpec, bake
from tasks import aws as aws_tasks
from tasks.packer import BakeResult
from tools.aws import LaunchTemplateState
from tools.process import default_logger

LAUNCH_TEMPLATE = "aws_launch_template.xwiki-lt"


class RolloutRequest(BaseModel):
    bake: BakeSpec = Field(default_factory=BakeSpec, description="What to bake")
    stack: str = Field("scalac/internal-prod/xwiki", description="Stack whose launch template takes the AMI")
    variables: dict[str, str] = Field(default_factory=dict, description="Other non-secret stack variables")
    approval: Approval = Field(
        Approval.auto, description="auto or required (pause for approval before apply)"
    )
    approval_timeout_seconds: int = Field(3600, ge=1)


class RolloutResult(BaseModel):
    bake: BakeResult
    apply: ApplyOutcome
    verified: LaunchTemplateState | None = None
    rolled_back_to: str | None = None


def _previous_ami(outcome_plan) -> str | None:  # noqa: ANN001
    res = outcome_plan.resource(LAUNCH_TEMPLATE)
    if res is None:
        return None
    change = next((c for c in res.changed if c.name == "image_id"), None)
    return change.old if change and isinstance(change.old, str) and change.old else None


@flow(name="ami-rollout", log_prints=True)
def ami_rollout(
    request: RolloutRequest = RolloutRequest(),  # noqa: B008
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> RolloutResult:
    """Bake (or reuse) the AMI, point the launch template at it, verify the ASG follows it."""
    log = default_logger()
    baked = bake(request.bake, aws_block)
    stack_request = StackRequest(
        stack=request.stack,
        variables={**request.variables, "ami_id": baked.ami_id},
        approval=request.approval,
        approval_timeout_seconds=request.approval_timeout_seconds,
    )
    outcome: ApplyOutcome | None = None
    previous: str | None = None
    try:
        outcome = apply(stack_request, backend_block, aws_block)
        previous = _previous_ami(outcome.plan)
        if not outcome.applied:
            log.info("launch template unchanged (%s)", outcome.reason)
            return RolloutResult(bake=baked, apply=outcome)
        lt_id = outcome.result.value("launch_template_id")
        asg = outcome.result.value("autoscaling_group_name")
        verified = aws_tasks.verify_launch_template(lt_id, asg, baked.ami_id, aws_block)
    except Exception:
        if previous is None and outcome is None:
            raise  # the plan itself failed: nothing was changed
        if previous:
            log.error("rollout failed after the change: re-applying the previous AMI %s", previous)
            apply(
                StackRequest(stack=request.stack, variables={**request.variables, "ami_id": previous}),
                backend_block,
                aws_block,
            )
        raise
    create_markdown_artifact(
        key="ami-rollout-provenance",
        markdown="\n".join(
            [
                f"# AMI rollout: `{request.bake.host}` -> `{request.stack}`",
                "",
                "| | |",
                "|---|---|",
                f"| source commit | `{baked.git_commit}` |",
                f"| content hash | `{baked.content_hash}` |",
                f"| AMI | `{baked.ami_id}`{' (reused)' if baked.reused else ''} |",
                f"| source AMI | `{baked.source_ami}` |",
                f"| launch template | `{verified.launch_template_id}` version {verified.latest_version} |",
                f"| auto scaling group | `{verified.asg_name}` ({verified.asg_version}) |",
                f"| previous AMI | `{previous or '-'}` |",
            ]
        ),
        description="provenance of the rolled-out AMI",
    )
    return RolloutResult(bake=baked, apply=outcome, verified=verified)
