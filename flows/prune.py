"""prune-images: deregister this project's old AMIs (and their snapshots), never one in use."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import Field

from blocks import AWS_BLOCK
from tasks.aws import PruneReport, prune_project_images


@flow(name="prune-images", log_prints=True)
def prune_images(
    keep: Annotated[int, Field(ge=1, description="Newest AMIs kept per host")] = 3,
    dry_run: Annotated[bool, Field(description="Only report what would be deregistered")] = True,
    hosts: Annotated[list[str] | None, Field(description="Only these hosts (tag `host`), else all")] = None,
    aws_block: str = AWS_BLOCK,
) -> PruneReport:
    """Keep the `keep` newest project AMIs per host and every referenced one; deregister the rest."""
    report = prune_project_images(keep, dry_run, hosts, aws_block)
    create_table_artifact(
        key="prune-images",
        table=[row.model_dump() for row in report.rows],
        description=("dry run: " if dry_run else "") + f"{len(report.deregistered)} AMIs pruned",
    )
    return report
