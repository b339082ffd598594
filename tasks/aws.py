"""AWS tasks (boto3 through the AwsCredentials block): source AMI, reuse by content hash, rollout check,
image pruning."""

from __future__ import annotations

import threading
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, AwsCredentials
from tools import aws
from tools.aws import AmiInfo, LaunchTemplateState
from tools.errors import AwsError, InvalidInput, retry_if_transient
from tools.process import default_logger

__all__ = [
    "PruneReport",
    "find_baked_image",
    "launch_template_now",
    "prune_project_images",
    "resolve_source_ami",
    "verify_launch_template",
]


_CLIENTS = threading.Lock()


def clients(aws_block: str, *names: str) -> list[Any]:
    """boto3 clients from prefect-aws's client cache. Creating one costs ~0.5 s of CPU (the service
    model); the lock lets concurrent tasks (a fan-out of bakes) wait for the first instead of each
    building its own under the GIL. The clients themselves are thread-safe."""
    creds = AwsCredentials.load(aws_block)
    with _CLIENTS:
        return [creds.get_client(name) for name in names]


def endpoint(aws_block: str) -> str:
    return AwsCredentials.load(aws_block).aws_client_parameters.endpoint_url or ""


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
def find_baked_image(content_hash: str, aws_block: str = AWS_BLOCK) -> AmiInfo | None:
    (ec2,) = clients(aws_block, "ec2")
    return aws.find_by_hash(ec2, content_hash)


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


class PruneRow(BaseModel):
    image_id: str
    host: str
    created: str
    action: str = Field(description="keep (newest), keep (referenced), deregister, would deregister")
    snapshots: list[str] = Field(default_factory=list)


class PruneReport(BaseModel):
    dry_run: bool
    rows: list[PruneRow] = Field(default_factory=list)

    @property
    def deregistered(self) -> list[str]:
        return [r.image_id for r in self.rows if r.action in ("deregister", "would deregister")]

    def markdown(self) -> str:
        title = "Image prune (dry run: nothing changed)" if self.dry_run else "Image prune"
        lines = [f"# {title}", "", "| AMI | Host | Created | Action | Snapshots |", "|---|---|---|---|---|"]
        lines += [
            f"| {r.image_id} | {r.host} | {r.created} | {r.action} | {', '.join(r.snapshots) or '-'} |"
            for r in self.rows
        ]
        return "\n".join(lines)


@task(name="prune-project-images", cache_policy=NO_CACHE)
def prune_project_images(
    keep: int, dry_run: bool = True, hosts: list[str] | None = None, aws_block: str = AWS_BLOCK
) -> PruneReport:
    """Deregister project AMIs beyond the `keep` newest per host, never one in use; delete their snapshots."""
    if keep < 1:
        raise InvalidInput("keep must be at least 1 (the newest image of each host is always kept)")
    (ec2,) = clients(aws_block, "ec2")
    used = aws.referenced_image_ids(ec2)
    report = PruneReport(dry_run=dry_run)
    by_host: dict[str, list[AmiInfo]] = {}
    for image in aws.project_images(ec2):
        host = image.tags.get("host", "?")
        if hosts and host not in hosts:
            continue
        by_host.setdefault(host, []).append(image)
    for host, images in sorted(by_host.items()):
        for index, image in enumerate(images):
            if index < keep:
                action = "keep (newest)"
            elif image.image_id in used:
                action = "keep (referenced)"
            else:
                action = "would deregister" if dry_run else "deregister"
                if not dry_run:
                    aws.deregister(ec2, image)
            default_logger().info("%s %s (%s): %s", host, image.image_id, image.created, action)
            report.rows.append(
                PruneRow(
                    image_id=image.image_id,
                    host=host,
                    created=image.created,
                    action=action,
                    snapshots=image.snapshot_ids,
                )
            )
    return report
