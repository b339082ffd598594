"""prune-images' decision and deregistration: keep the newest `keep` AMIs of each host (by creation) and
every AMI in use (tools/aws_refs.py); deregister the rest with their snapshots.

Never an AMI in use, even while a rollout runs:
- each deregister happens inside the bake slot of that AMI's content (`bake-<host>-<hash12>`, held by a
  bake of that content from the content-hash lookup until it has recorded the AMI it bakes or reuses, so
  no bake can be picking this AMI up for reuse meanwhile), right after a re-check of that AMI's references
  (launch template versions, live instances, ASGs, the host's latest bake record): an AMI
  a bake picked up after the decision is its host's latest bake record by then, and is kept;
- the flow holds the Terraform stacks' slots for a real prune, so no apply-stack is planning or applying
  (with an AMI, perhaps an old one) while images are decided and deregistered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK
from tasks import audit
from tasks.aws import clients
from tasks.limits import BAKE_LEASE_SECONDS, ensure_bake_limit, holding
from tools import aws, aws_refs
from tools.aws import AmiInfo
from tools.aws_refs import DEFAULT_PAGE_SIZE
from tools.errors import InvalidInput
from tools.process import default_logger

__all__ = ["DEFAULT_PAGE_SIZE", "PruneReport", "PruneRow", "decide", "prune_now", "prune_project_images"]


class PruneRow(BaseModel):
    image_id: str
    host: str
    created: str
    action: str = Field(
        description="keep (newest), keep (referenced), keep (referenced since the decision), deregister, "
        "would deregister, gone"
    )
    reason: str = Field("", description="Why an AMI is kept: its references")
    content_hash: str = Field("", description="Its bake's content hash (tag, else the name's suffix)")
    snapshots: list[str] = Field(default_factory=list)


class PruneReport(BaseModel):
    dry_run: bool
    rows: list[PruneRow] = Field(default_factory=list)

    @property
    def deregistered(self) -> list[str]:
        return [r.image_id for r in self.rows if r.action in ("deregister", "would deregister")]

    def markdown(self) -> str:
        title = "Image prune (dry run: nothing changed)" if self.dry_run else "Image prune"
        lines = [f"# {title}", "", "| AMI | Host | Created | Action | Why | Snapshots |"]
        lines.append("|---|---|---|---|---|---|")
        lines += [
            f"| {r.image_id} | {r.host} | {r.created} | {r.action} | {r.reason or '-'} | "
            f"{', '.join(r.snapshots) or '-'} |"
            for r in self.rows
        ]
        return "\n".join(lines)


def decide(
    images: list[AmiInfo], refs: aws_refs.References, keep: int, hosts: list[str] | None = None
) -> list[PruneRow]:
    """Pure: per host (newest first, by creation time), keep `keep` and every referenced one; the rest
    are candidates (action "deregister"). Images not available (nor failed) are left alone."""
    if keep < 1:
        raise InvalidInput("keep must be at least 1 (the newest image of each host is always kept)")
    by_host: dict[str, list[AmiInfo]] = {}
    for image in images:
        host = image.tags.get("host", "?")
        if (hosts and host not in hosts) or image.state not in ("available", "failed"):
            continue
        by_host.setdefault(host, []).append(image)
    rows = []
    for host, group in sorted(by_host.items()):
        for index, image in enumerate(sorted(group, key=aws_refs.created_time, reverse=True)):
            if index < keep:
                action, reason = "keep (newest)", refs.why(image.image_id)
            elif image.image_id in refs:
                action, reason = "keep (referenced)", refs.why(image.image_id)
            else:
                action, reason = "deregister", ""
            rows.append(
                PruneRow(
                    image_id=image.image_id,
                    host=host,
                    created=image.created,
                    action=action,
                    reason=reason,
                    content_hash=image.tags.get("content_hash") or image.name.rpartition("_")[2],
                    snapshots=image.snapshot_ids,
                )
            )
    return rows


def _deregister_checked(
    ec2: Any, autoscaling: Any, row: PruneRow, page_size: int, before_check: Callable[[PruneRow], None] | None
) -> PruneRow:
    """Inside the bake slot of the AMI's content: re-check its references, then deregister it (or keep
    it)."""
    with holding(ensure_bake_limit(row.host, row.content_hash), BAKE_LEASE_SECONDS):
        if before_check is not None:
            before_check(row)  # tests: a reference appears between the decision and the deregister
        now, reasons = aws_refs.references_to(ec2, autoscaling, AmiInfo(image_id=row.image_id), page_size)
        if now is None:
            return row.model_copy(update={"action": "gone", "reason": "deregistered meanwhile"})
        if reasons:
            return row.model_copy(
                update={"action": "keep (referenced since the decision)", "reason": "; ".join(reasons)}
            )
        aws.deregister(ec2, now)
        audit.record("ami", "deregistered", row.image_id, host=row.host, snapshots=now.snapshot_ids)
        return row.model_copy(update={"snapshots": now.snapshot_ids})


def prune_now(
    keep: int,
    dry_run: bool = True,
    hosts: list[str] | None = None,
    aws_block: str = AWS_BLOCK,
    page_size: int = aws_refs.DEFAULT_PAGE_SIZE,
    before_check: Callable[[PruneRow], None] | None = None,
) -> PruneReport:
    """Decide, then (unless dry run) re-check and deregister each candidate. `before_check` is a seam for
    tests: it runs after the decision, right before an AMI's re-check."""
    log = default_logger()
    ec2, autoscaling = clients(aws_block, "ec2", "autoscaling")
    images = aws_refs.project_images(ec2, page_size)
    refs = aws_refs.find_references(ec2, autoscaling, images, page_size)
    report = PruneReport(dry_run=dry_run)
    for row in decide(images, refs, keep, hosts):
        if row.action == "deregister":
            row = (
                row.model_copy(update={"action": "would deregister"})
                if dry_run
                else _deregister_checked(ec2, autoscaling, row, page_size, before_check)
            )
        log.info(
            "%s %s (%s): %s%s",
            row.host,
            row.image_id,
            row.created,
            row.action,
            f" ({row.reason})" * bool(row.reason),
        )
        report.rows.append(row)
    return report


@task(name="prune-project-images", cache_policy=NO_CACHE)
def prune_project_images(
    keep: int,
    dry_run: bool = True,
    hosts: list[str] | None = None,
    aws_block: str = AWS_BLOCK,
    page_size: int = aws_refs.DEFAULT_PAGE_SIZE,
) -> PruneReport:
    """Deregister project AMIs beyond the `keep` newest per host, never one in use; delete their snapshots."""
    return prune_now(keep, dry_run, hosts, aws_block, page_size)
