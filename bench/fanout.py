"""Several bakes in one flow run: fanned out with `.submit()` on a ThreadPoolTaskRunner, or one after the
other (the serial baseline of comparison 3). Each bake is bake-image's whole host path
(`tasks.packer.bake_host`: plan-bake, the content's slot, find-baked-image, packer-bake) wrapped in one
task; bakes of different content hold different slots, so nothing serialises them.

bake-image only accepts host var files from infra/packer/vars/host (xwiki, jenkins), so the bench bakes
those hosts with distinct `environment` values: distinct content hashes (and AMI names, suffixed with the
hash), so every bake really runs.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import AWS_BLOCK
from tasks.packer import BakeResult, BakeSpec, bake_host


@task(name="bake-one", cache_policy=NO_CACHE, task_run_name="bake-one {spec.host} {spec.environment}")
def bake_one(spec: BakeSpec, aws_block: str = AWS_BLOCK) -> BakeResult:
    return bake_host(spec, aws_block)


@flow(name="bench-bake-fanout", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def bake_fanout(specs: list[BakeSpec], aws_block: str = AWS_BLOCK) -> list[BakeResult]:
    """Every bake submitted at once; results in the order given."""
    futures = [bake_one.submit(spec, aws_block) for spec in specs]
    return [f.result() for f in futures]


@flow(name="bench-bake-serial", log_prints=True)
def bake_serial(specs: list[BakeSpec], aws_block: str = AWS_BLOCK) -> list[BakeResult]:
    """The same bakes one after the other."""
    return [bake_one(spec, aws_block) for spec in specs]
