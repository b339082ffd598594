"""AWS tasks (boto3 through the AwsCredentials block): source AMI, reuse by content hash, the bake record,
rollout check. Image pruning is tasks/prune.py."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import AWS_BLOCK, resolve
from tools import aws, aws_refs
from tools.aws import AmiInfo, LaunchTemplateState
from tools.errors import AwsError, retry_if_transient
from tools.process import default_logger

__all__ = [
    "AmiInfo",
    "LaunchTemplateState",
    "find_baked_image",
    "launch_template_now",
    "record_bake",
    "resolve_source_ami",
    "verify_launch_template",
]


clients = resolve.aws_clients  # boto3 clients of the AWS block, loaded once per run
endpoint = resolve.aws_endpoint


_RETRY = {
    "retries": 2,
    "retry_delay_seconds": 3,
    "retry_condition_fn": retry_if_transient,
    "cache_policy": NO_CACHE,
}


@task(name="resolve-source-ami", **_RETRY)
def resolve_source_ami(image_query: str, owner: str, aws_block: str = AWS_BLOCK) -> str:
    """The AMI Packer's source_ami_filter will start from (part of the content hash)."""
    (ec2,) = clients(aws_block, "ec2")
    image = aws.source_image(ec2, image_query, owner)
    if image is None:
        raise AwsError(f"no source AMI matches name={image_query!r} owner={owner!r} (hvm, ebs)")
    default_logger().info("source AMI: %s (%s)", image.image_id, image.name)
    return image.image_id


@task(name="find-baked-image", **_RETRY)
def find_baked_image(content_hash: str, aws_block: str = AWS_BLOCK, ami_name: str = "") -> AmiInfo | None:
    """The available AMI tagged with this content hash; else an available self-owned AMI named `ami_name`
    (the name carries the hash: a bake stopped after creating its AMI but before tagging it), adopted."""
    (ec2,) = clients(aws_block, "ec2")
    found = aws.find_by_hash(ec2, content_hash)
    if found is not None or not ami_name:
        return found
    images = aws.call(
        "describe_images",
        ec2.describe_images,
        Owners=["self"],
        Filters=[{"Name": "name", "Values": [ami_name]}],
    )["Images"]
    if not images:
        return None
    image = AmiInfo.from_api(images[0])
    if image.state != "available":
        raise AwsError(
            f"AMI {image.image_id} named {ami_name} (this content) is {image.state}: a bake of it was "
            "interrupted; Packer cannot bake the same name again",
            hint=f"wait until it is available and re-run, or deregister {image.image_id}",
        )
    default_logger().warning(
        "adopting %s: named %s but without the content hash tag", image.image_id, ami_name
    )
    return image


@task(name="record-bake", **_RETRY)
def record_bake(image_id: str, tags: dict[str, str], aws_block: str = AWS_BLOCK) -> AmiInfo:
    """The bake record: tag the AMI `baked_at` (now) plus `tags`, then check it is still available (a prune
    that deregistered it first leaves nothing to use: the bake fails instead of handing on a lost AMI)."""
    (ec2,) = clients(aws_block, "ec2")
    aws.tag(ec2, [image_id], {**tags, aws_refs.BAKED_AT_TAG: aws_refs.now_iso()})
    images = aws.call(
        "describe_images",
        ec2.describe_images,
        Owners=["self"],
        Filters=[{"Name": "image-id", "Values": [image_id]}],
    )["Images"]
    if not images or images[0].get("State") != "available":
        raise AwsError(f"AMI {image_id} is no longer available after the bake recorded it")
    return AmiInfo.from_api(images[0])


@task(name="verify-launch-template", **_RETRY)
def verify_launch_template(
    launch_template_id: str, asg_name: str, ami_id: str, aws_block: str = AWS_BLOCK
) -> LaunchTemplateState:
    """The launch template's latest version uses `ami_id` and the ASG follows that template ($Latest)."""
    ec2, autoscaling = clients(aws_block, "ec2", "autoscaling")
    state = aws.launch_template_state(ec2, autoscaling, launch_template_id, asg_name)
    problems = []
    if state.latest_image_id != ami_id:
        problems.append(
            f"latest version {state.latest_version} uses {state.latest_image_id}, expected {ami_id}"
        )
    if state.asg_name is None:
        problems.append(f"auto scaling group {asg_name} not found")
    elif state.asg_launch_template_id != launch_template_id or state.asg_version not in (
        "$Latest",
        str(state.latest_version),
    ):
        problems.append(f"ASG {asg_name} uses {state.asg_launch_template_id} version {state.asg_version}")
    if problems:
        raise AwsError("rollout verification failed: " + "; ".join(problems), tail=problems)
    default_logger().info(
        "verified: %s v%d uses %s; ASG %s follows it",
        launch_template_id,
        state.latest_version,
        ami_id,
        asg_name,
    )
    return state


@task(name="read-launch-template", **_RETRY)
def launch_template_now(
    launch_template_id: str, asg_name: str | None, aws_block: str = AWS_BLOCK
) -> LaunchTemplateState:
    """The launch template's latest version and image, and what the ASG uses (no expectation)."""
    ec2, autoscaling = clients(aws_block, "ec2", "autoscaling")
    return aws.launch_template_state(ec2, autoscaling, launch_template_id, asg_name)
