"""bake-image: the article's `packer build packer_template.json common.json os/... mode/... host/...`.

Skips the bake when an available AMI already carries the same content hash (template, layered
variables, provisioner files, source AMI).

One bake of a host at a time (the strict global concurrency limit `bake-host-<host>`, tasks/limits.py),
from the content-hash lookup until the AMI is recorded (`baked_at` tag): two bakes of the same content end
with one AMI, the second reusing the first's. Packer never deregisters anything (no force_deregister):
the AMI name carries the content hash, and an AMI of that name left untagged by an interrupted bake is
adopted. prune-images deregisters a host's AMI only inside the same slot, after re-checking that it is
not the host's latest bake record (nor otherwise in use)."""

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from pydantic import BaseModel, Field

import flows  # noqa: F401 - the engine fix (flows/engine.py), also when Prefect loads this file by path
from blocks import AWS_BLOCK
from tasks import audit
from tasks.aws import find_baked_image, record_bake
from tasks.limits import BAKE_LEASE_SECONDS, ensure_bake_limit
from tasks.logs import default_logger
from tasks.packer import BakeResult, available, bake_tags, plan_bake, run_bake
from tasks.task_runner import StoppingThreadPoolTaskRunner

HostName = Literal[tuple(available("host"))]  # type: ignore[valid-type]
OsName = Literal[tuple(available("os"))]  # type: ignore[valid-type]
ModeName = Literal[tuple(available("mode"))]  # type: ignore[valid-type]


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
    source, digest, commit, name = plan.source_ami, plan.content_hash, plan.git_commit, plan.ami_name
    host = plan.variables.get("hostname") or spec.host
    with concurrency(
        ensure_bake_limit(host),
        occupy=1,
        strict=True,
        lease_duration=BAKE_LEASE_SECONDS,
        raise_on_lease_renewal_failure=False,  # the content hash and Packer's name check still hold
    ):
        existing = find_baked_image(digest, aws_block, name)
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
        tags = {} if existing is not None and existing.tags.get("content_hash") == digest else bake_tags(plan)
        record_bake(result.ami_id, tags, aws_block)
    audit.record(
        "ami",
        "reused" if result.reused else "baked",
        result.ami_id,
        host=host,
        content_hash=digest,
        git_commit=result.git_commit,
        region=result.region,
    )
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


@flow(name="bake-image", log_prints=True, task_runner=StoppingThreadPoolTaskRunner())
def bake_image(spec: BakeSpec = BakeSpec(), aws_block: str = AWS_BLOCK) -> BakeResult:  # noqa: B008
    """Build (or reuse) the AMI of one host with Packer."""
    return bake(spec, aws_block)
