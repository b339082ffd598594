"""prune-images: deregister this project's old AMIs (and their snapshots), never one in use.

In use: referenced by any launch template version, any instance that is not terminated, any auto
scaling group (launch template, mixed instances policy, launch configuration), or the latest bake record
of its host (tools/aws_refs.py; every listing paginated). A real prune (not a dry run) holds the Terraform
stacks' slots (`tf-stack-<stack>`, the ones apply-stack holds) while it decides and deregisters, and
deregisters each AMI inside the bake slot of its content right after re-checking its references
(tasks/prune.py): a rollout that reuses an old AMI keeps it.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import Field, StringConstraints

import flows  # noqa: F401 - the engine fix (flows/engine.py), also when Prefect loads this file by path
from blocks import AWS_BLOCK
from tasks import stacks as tf
from tasks.prune import DEFAULT_PAGE_SIZE, PruneReport, prune_project_images
from tasks.stack_slot import ensure_stack_limit, stack_slots

HostTag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
StackPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,199}$")]


def _stack_slots(stacks: list[str] | None) -> list[str]:
    """The slot names of the given stacks (validated), or of every stack under infra/terraform."""
    chosen = stacks if stacks is not None else tf.list_stacks()
    paths = [tf.resolve_stack(s).relative_to(tf.TERRAFORM_DIR).as_posix() for s in chosen]
    return [ensure_stack_limit(path) for path in sorted(set(paths))]


@flow(name="prune-images", log_prints=True)
def prune_images(
    keep: Annotated[int, Field(ge=1, description="Newest AMIs kept per host")] = 3,
    dry_run: Annotated[bool, Field(description="Only report what would be deregistered")] = True,
    hosts: Annotated[
        list[HostTag] | None, Field(description="Only these hosts (tag `host`), else all")
    ] = None,
    aws_block: str = AWS_BLOCK,
    page_size: Annotated[
        int, Field(ge=1, le=1000, description="Items per page of each AWS listing")
    ] = DEFAULT_PAGE_SIZE,
    stacks: Annotated[
        list[StackPath] | None,
        Field(description="Terraform stacks whose apply slot a real prune holds; none given: every stack"),
    ] = None,
) -> PruneReport:
    """Keep the `keep` newest project AMIs per host and every AMI in use; deregister the rest."""
    slots = [] if dry_run else _stack_slots(stacks)
    with stack_slots(slots):
        report = prune_project_images(keep, dry_run, hosts, aws_block, page_size)
    create_table_artifact(
        key="prune-images",
        table=[row.model_dump() for row in report.rows],
        description=("dry run: " if dry_run else "") + f"{len(report.deregistered)} AMIs pruned",
    )
    return report
