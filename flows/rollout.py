"""ami-rollout: the devops-packer-xwiki Jenkins job. bake-image -> apply-stack(ami_id) -> verify ->
refresh the instances.

A new AMI is rolled out only when the servers run it: after the launch template moved, the auto scaling
group's running instances are replaced in batches, each batch through a health gate
(tasks/instance_refresh.py: AWS's instance refresh API, or plain terminate-and-wait batches where the
endpoint lacks it). A failed gate fails the transaction: the launch template goes back to the previous
AMI (below) and the instances already replaced are replaced again, onto the previous AMI.

bake-image and apply-stack run as subflows (their own runs in the UI, with their own parameters); they use
the blocks this run loads (each block is read once per rollout). While Packer bakes, a thread prepares the
apply: the blocks, the boto3 clients, the state bucket checked, and the apply's private workspace with its
`terraform init` (tasks/terraform_context.py `init_ahead`; the plan takes that workspace, or initialises
its own if the preparation failed; an unused one is removed).

Rollback, with Prefect's `transaction()`: apply-stack and the verification run inside one transaction.
apply-stack's terraform-apply task is told `restore_on_rollback={"ami_id": "<launch template>.image_id"}`:
after a successful apply it records the launch template's image id before the apply (from the plan), and
its on_rollback hook re-applies the stack with that AMI when a later task of the transaction fails (the
verification). Prefect runs on_rollback hooks only for tasks that completed, so a terraform apply that
fails part-way restores the previous AMI itself, in the task, before raising. Either way the launch
template gets a new version with the previous image id, and the run fails with RolloutFailed naming the
cause and what the launch template uses now.

A bake never deregisters an AMI (no force_deregister; each AMI name carries its content hash), and
prune-images keeps every AMI in use: the previous AMI a rollback points at still exists.
"""

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, TF_BACKEND_BLOCK, resolve
from flows.apply import ApplyOutcome, Approval, StackRequest, apply_stack, wait_for_approval
from flows.bake import BakeSpec, bake_image
from tasks import aws as aws_tasks
from tasks import stacks as tf
from tasks.approval import suspending_here
from tasks.aws import LaunchTemplateState
from tasks.instance_refresh import HealthGate, RefreshReport, RefreshSpec, refresh_instances
from tasks.logs import default_logger
from tasks.packer import BakeResult
from tasks.policy import validate_policies
from tasks.preflight import validate_stack
from tasks.task_runner import is_cancel
from tasks.terraform_context import init_ahead
from tools.errors import InvalidInput, RolloutFailed, ToolError

LAUNCH_TEMPLATE = "aws_launch_template.xwiki-lt"


class RolloutRequest(BaseModel):
    bake: BakeSpec = Field(default_factory=BakeSpec, description="What to bake")
    stack: str = Field("scalac/internal-prod/xwiki", description="Stack whose launch template takes the AMI")
    variables: dict[str, str] = Field(default_factory=dict, description="Other non-secret stack variables")
    approval: Approval = Field(
        Approval.auto, description="auto or required (pause for approval before apply)"
    )
    approval_timeout_seconds: int = Field(3600, ge=1)
    refresh: RefreshSpec = Field(
        default_factory=RefreshSpec, description="Replace the running instances with the new AMI, in batches"
    )


class RolloutResult(BaseModel):
    bake: BakeResult
    apply: ApplyOutcome
    verified: LaunchTemplateState | None = None
    instances: RefreshReport | None = Field(None, description="which instance runs which AMI, at the end")
    rolled_back_to: str | None = None


def _previous_ami(outcome_plan) -> str | None:  # noqa: ANN001
    res = outcome_plan.resource(LAUNCH_TEMPLATE)
    if res is None:
        return None
    change = next((c for c in res.changed if c.name == "image_id"), None)
    return change.old if change and isinstance(change.old, str) and change.old else None


def _validate(request: RolloutRequest) -> str:
    """Stack and variables are checked before anything is baked; the stack's path under infra/terraform."""
    if "ami_id" in request.variables:
        raise InvalidInput("variables must not set ami_id: the rollout sets it to the AMI it bakes")
    stack_dir = tf.resolve_stack(request.stack)
    tf.check_variables(stack_dir, {**request.variables, "ami_id": ""})
    request.refresh.health.check_inputs()
    stack = stack_dir.relative_to(tf.TERRAFORM_DIR).as_posix()
    validate_policies(stack)
    validate_stack(stack)  # pre-flight before the bake (apply-stack finds the pass remembered)
    return stack


@flow(name="ami-rollout", log_prints=True)
def ami_rollout(
    request: RolloutRequest = RolloutRequest(),  # noqa: B008
    backend_block: str = TF_BACKEND_BLOCK,
    aws_block: str = AWS_BLOCK,
) -> RolloutResult:
    """Bake (or reuse) the AMI, point the launch template at it, verify the ASG follows it."""
    # a plan that needs approval suspends this (deployment) run, not a subflow
    with suspending_here(), resolve.shared_with_subflows():
        return _bake_and_apply(request, _validate(request), backend_block, aws_block)


def _bake_and_apply(request: RolloutRequest, stack: str, backend_block: str, aws_block: str) -> RolloutResult:
    """The bake, with the apply's preparation alongside (clients, state bucket, workspace and init)."""
    clients = ("ec2", "autoscaling")  # the verification's
    with init_ahead(stack, request.variables, backend_block, aws_block, pending=("ami_id",), clients=clients):
        baked = bake_image(request.bake, aws_block)
        return _apply_baked(request, stack, baked, backend_block, aws_block)


def _apply_baked(
    request: RolloutRequest, stack: str, baked: BakeResult, backend_block: str, aws_block: str
) -> RolloutResult:
    """Point the stack's launch template at the baked AMI, verify, refresh the instances; roll back on a
    failure after the launch template changed."""
    log = default_logger()
    stack_request = StackRequest(
        stack=stack,
        variables={**request.variables, "ami_id": baked.ami_id},
        approval=request.approval,
        approval_timeout_seconds=request.approval_timeout_seconds,
        restore_on_rollback={"ami_id": f"{LAUNCH_TEMPLATE}.image_id"},
    )
    outcome: ApplyOutcome | None = None
    instances: RefreshReport | None = None
    try:
        with transaction():
            outcome = apply_stack(stack_request, backend_block, aws_block)
            if outcome.reason == "awaiting approval":
                # suspends: the process exits; resumed, this run starts again and apply-stack finds the answer
                wait_for_approval(outcome, request.approval_timeout_seconds, stack_request.notify_block)
            if outcome.result is None:  # rejected or no answer: nothing changed, nothing to verify
                log.info("launch template unchanged (%s)", outcome.reason)
                return RolloutResult(bake=baked, apply=outcome)
            if not outcome.applied:
                log.info("launch template unchanged (%s): verifying it", outcome.reason)
            verified = aws_tasks.verify_launch_template(
                outcome.result.value("launch_template_id"),
                outcome.result.value("autoscaling_group_name"),
                baked.ami_id,
                aws_block,
            )
            if request.refresh.enabled and verified.asg_name:
                instances = refresh_instances(
                    verified.asg_name,
                    verified.launch_template_id,
                    str(verified.latest_version),
                    baked.ami_id,
                    request.refresh,
                    aws_block,
                )
    except Exception as exc:
        previous = _previous_ami(outcome.plan) if outcome is not None and outcome.applied else None
        if previous is None or is_cancel(exc):
            raise  # nothing we changed to undo (or the apply restored it itself); a cancel: the rerun decides
        raise _rollout_failed(exc, outcome, baked, previous, aws_block, request.refresh) from exc
    previous = _previous_ami(outcome.plan)
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
                *(
                    f"| instance `{instance}` | `{image}` |"
                    for instance, image in (instances.instances if instances else {}).items()
                ),
            ]
        ),
        description="provenance of the rolled-out AMI",
    )
    return RolloutResult(bake=baked, apply=outcome, verified=verified, instances=instances)


def _rollout_failed(
    exc: BaseException,
    outcome: ApplyOutcome,
    baked: BakeResult,
    previous: str,
    aws_block: str,
    refresh: RefreshSpec,
) -> RolloutFailed:
    """The error after a rolled-back rollout, saying what the launch template uses now (read from AWS);
    instances already replaced with the new AMI are replaced again, onto the previous one."""
    cause = exc.message if isinstance(exc, ToolError) else str(exc)
    lt_id = outcome.result.value("launch_template_id") if outcome.result else None
    asg = outcome.result.value("autoscaling_group_name") if outcome.result else None
    now = "unknown"
    restored = False
    state = None
    if lt_id:
        try:
            state = aws_tasks.launch_template_now(lt_id, asg, aws_block)
            now = f"launch template {lt_id} version {state.latest_version} uses {state.latest_image_id}"
            restored = state.latest_image_id == previous
        except Exception as again:  # noqa: BLE001 - report the rollout's cause, not this
            now = f"launch template {lt_id}: could not be read ({again})"
    if restored and refresh.enabled and state is not None and state.asg_name:
        try:
            back = refresh_instances(
                state.asg_name,
                lt_id,
                str(state.latest_version),
                previous,
                refresh.model_copy(update={"health": HealthGate(check="ec2")}),
                aws_block,
            )
            now += f"; instances of {state.asg_name}: " + ", ".join(
                f"{i} on {image}" for i, image in back.instances.items()
            )
        except Exception as again:  # noqa: BLE001 - report the rollout's cause, and this next to it
            now += f"; instances of {state.asg_name} NOT all back on {previous}: {again}"
    message = (
        f"rollout of {baked.ami_id} to {outcome.stack} failed after the launch template changed: {cause}; "
        + (
            f"rolled back to the previous AMI {previous}: {now}"
            if restored
            else f"ROLLBACK to {previous} did not take effect: {now}"
        )
    )
    default_logger().error("%s", message)
    return RolloutFailed(
        message,
        tail=getattr(exc, "tail", []),
        hint=None if restored else f"re-run apply-stack with ami_id={previous}",
    )
