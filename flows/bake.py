"""bake-image: the article's `packer build packer_template.json common.json os/... mode/... host/...`.

Skips the bake when an available AMI already carries the same content hash (template, layered
variables, provisioner files, source AMI)."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK
from tasks.aws import find_baked_image, resolve_source_ami
from tasks.packer import BakeResult, plan_bake, run_bake
from tools import packer
from tools.process import default_logger

HostName = Literal[tuple(packer.available("host"))]  # type: ignore[valid-type]
OsName = Literal[tuple(packer.available("os"))]  # type: ignore[valid-type]
ModeName = Literal[tuple(packer.available("mode"))]  # type: ignore[valid-type]


class BakeSpec(BaseModel):
    host: HostName = Field("xwiki", description="Host var file under infra/packer/vars/host")
    os: OsName = Field("ubuntu-18.04", description="OS var file under infra/packer/vars/os")
    mode: ModeName = Field("build", description="Mode var file under infra/packer/vars/mode (build or ci)")
    environment: str | None = Field(
        None, description="Overrides the layered `environment` tag (e.g. dev, prod)"
    )


def bake(spec: BakeSpec, aws_block: str = AWS_BLOCK) -> BakeResult:
    """The bake steps, shared by bake-image and ami-rollout."""
    plan = plan_bake(spec.host, spec.os, spec.mode, spec.environment, aws_block)
    source = resolve_source_ami(plan.variables["image_query"], plan.variables["image_owner"], aws_block)
    digest = packer.content_hash(packer.PACKER_DIR / packer.TEMPLATE, plan.variables, source)
    commit = packer.git_commit()
    existing = find_baked_image(digest, aws_block)
    if existing is not None:
        default_logger().info(
            "reusing %s: an available AMI already has content hash %s; bake skipped",
            existing.image_id,
            digest[:12],
        )
        result = BakeResult(
            ami_id=existing.image_id,
            region=plan.variables.get("region", ""),
            content_hash=digest,
            source_ami=source,
            git_commit=existing.tags.get("git_commit", commit),
            reused=True,
            ami_name=existing.name,
            host=spec.host,
            mode=spec.mode,
        )
    else:
        result = run_bake(plan, digest, source, commit, aws_block)
    create_markdown_artifact(
        key=f"bake-{spec.host}",
        markdown="\n".join(
            [
                f"# Bake `{spec.host}` ({spec.os}, {spec.mode})",
                "",
                f"- AMI: `{result.ami_id}` ({result.region})"
                + (" **reused, bake skipped**" if result.reused else ""),
                f"- content hash: `{digest}`",
                f"- source AMI: `{source}`",
                f"- git commit: `{result.git_commit}`",
                f"- var files: {' -> '.join(f'`{p}`' for p in plan.files)}",
            ]
        ),
        description=f"AMI for {spec.host}",
    )
    return result


@flow(name="bake-image", log_prints=True)
def bake_image(spec: BakeSpec = BakeSpec(), aws_block: str = AWS_BLOCK) -> BakeResult:  # noqa: B008
    """Build (or reuse) the AMI of one host with Packer."""
    return bake(spec, aws_block)
