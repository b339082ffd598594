"""bake-image: the article's `packer build packer_template.json common.json os/... mode/... host/...`.

The whole bake of the host is `tasks.packer.bake_host` (plan, the slot of its content, reuse or bake,
record, audit event, artifact); this flow gives it a run of its own in the UI, also as ami-rollout's
subflow."""

from prefect import flow

import flows  # noqa: F401 - the engine fix (flows/engine.py), also when Prefect loads this file by path
from blocks import AWS_BLOCK
from tasks.packer import BakeResult, BakeSpec, bake_host
from tasks.task_runner import StoppingThreadPoolTaskRunner

__all__ = ["BakeSpec", "bake_image"]


@flow(name="bake-image", log_prints=True, task_runner=StoppingThreadPoolTaskRunner())
def bake_image(spec: BakeSpec = BakeSpec(), aws_block: str = AWS_BLOCK) -> BakeResult:  # noqa: B008
    """Build (or reuse) the AMI of one host with Packer."""
    return bake_host(spec, aws_block)
