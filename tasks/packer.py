"""Packer tasks: plan a bake (layer the var files, resolve the source AMI, compute the content hash, the
commit and the AMI name) and run it (validate + build), returning the AMI id."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, AwsCredentials, resolve
from tasks.aws import endpoint, resolve_source_ami
from tools import aws, packer
from tools.errors import BakeFailed, retry_if_transient
from tools.process import default_logger

__all__ = ["BakePlan", "BakeResult", "available", "bake_tags", "plan_bake", "run_bake"]

available = packer.available  # the var files of a layer (host, os, mode): the flow's parameter choices


class BakePlan(BaseModel):
    host: str
    os: str
    mode: str
    variables: dict[str, str] = Field(
        description="Merged variables (no secrets: AWS keys travel as environment)"
    )
    files: list[str] = Field(description="Var files in precedence order (later wins)")
    sandbox: bool = False
    source_ami: str = Field("", description="The AMI Packer's source_ami_filter starts from")
    content_hash: str = Field("", description="Template, layered variables, provisioner files, source AMI")
    git_commit: str = ""
    ami_name: str = Field("", description="The AMI's name; it carries the content hash")


class BakeResult(BaseModel):
    ami_id: str
    region: str
    content_hash: str
    source_ami: str
    git_commit: str
    reused: bool = Field(description="True when an available AMI with this content hash existed: no bake ran")
    ami_name: str = ""
    host: str = ""
    mode: str = ""


@task(name="plan-bake", cache_policy=NO_CACHE)
def plan_bake(
    host: str, os: str, mode: str, environment: str | None = None, aws_block: str = AWS_BLOCK
) -> BakePlan:
    """Validate the names; merge common -> os -> mode -> host (-> sandbox when the block has an endpoint);
    resolve the source AMI (its own task run, retried); the content hash, the commit and the AMI name."""
    ec2_endpoint = endpoint(aws_block)
    files = packer.layer_files(host, os, mode, sandbox=bool(ec2_endpoint))
    extra = {"mode": mode, "ec2_endpoint": ec2_endpoint}
    if environment:
        extra["environment"] = environment
    variables = packer.merge_layers(files, extra)
    region = resolve.aws_credentials(aws_block).region_name
    if region:
        variables["region"] = region
    default_logger().info(
        "var files (later wins): %s", " -> ".join(str(f.relative_to(packer.PACKER_DIR)) for f in files)
    )
    source = resolve_source_ami(variables["image_query"], variables["image_owner"], aws_block)
    digest = packer.content_hash(packer.PACKER_DIR / packer.TEMPLATE, variables, source)
    return BakePlan(
        host=host,
        os=os,
        mode=mode,
        variables=variables,
        files=[str(f) for f in files],
        sandbox=bool(ec2_endpoint),
        source_ami=source,
        content_hash=digest,
        git_commit=packer.git_commit(),
        ami_name=packer.ami_name(variables, digest),
    )


def bake_tags(plan: BakePlan) -> dict[str, str]:
    """The template's AMI tags, for an adopted AMI that lacks them."""
    v = plan.variables
    return {
        "Name": f"packer_{v.get('hostname')}_{v.get('os_name')}",
        "created_by": "packer",
        "environment": v.get("environment", ""),
        "host": v.get("hostname", plan.host),
        "mode": plan.mode,
        "git_commit": plan.git_commit,
        "content_hash": plan.content_hash,
        aws.PROJECT_TAG: v.get("project_tag", aws.PROJECT),
    }


def _max_retries(creds: AwsCredentials) -> str:
    """The block's botocore retry setting (`aws_client_parameters.config.retries.max_attempts`) for
    Packer's `max_retries`, so one setting governs boto3 and Packer; empty: the SDK's default."""
    config = creds.aws_client_parameters.config or {}
    attempts = (config.get("retries") or {}).get("max_attempts") if isinstance(config, dict) else None
    return str(max(int(attempts) - 1, 1)) if attempts else ""  # Packer: 0 means its default


class _BakeProgress:
    """A progress artifact that follows Packer's steps, so a person sees how far a long bake is."""

    def __init__(self, host: str) -> None:
        self.done = 0.0
        self.artifact_id = create_progress_artifact(
            progress=0.0, key=f"bake-progress-{host}", description=f"packer build of {host}"
        )

    def update(self, percent: float) -> None:
        if percent > self.done:
            self.done = percent
            update_progress_artifact(artifact_id=self.artifact_id, progress=percent)

    def on_message(self, message: str) -> None:
        percent = packer.progress_of(message)
        if percent is not None:
            self.update(percent)


@task(
    name="packer-bake",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    task_run_name="bake {plan.host}",
)
def run_bake(
    plan: BakePlan, content_hash: str, source_ami: str, commit: str, aws_block: str = AWS_BLOCK
) -> BakeResult:
    """`packer validate` then `packer build -machine-readable`; the AMI is tagged with the content hash."""
    variables = {
        **plan.variables,
        "content_hash": content_hash,
        "git_commit": commit,
        "ami_name_suffix": content_hash[:12],
    }
    creds = resolve.aws_credentials(aws_block)
    variables["aws_max_retries"] = _max_retries(creds)
    env, secret_env = resolve.aws_env(aws_block)
    progress = _BakeProgress(plan.host)
    packer.validate(variables, env=env, secret_env=secret_env)
    progress.update(5.0)
    out = packer.build(variables, env=env, secret_env=secret_env, on_ui=progress.on_message)
    progress.update(100.0)
    if len(out.ami_ids) != 1:
        raise BakeFailed(f"expected one AMI, packer reported {out.ami_ids or 'none'}", tail=out.ui[-40:])
    ami_id = out.ami_ids[0]
    default_logger().info("baked %s (content hash %s)", ami_id, content_hash[:12])
    return BakeResult(
        ami_id=ami_id,
        region=out.artifacts[0].region or plan.variables.get("region", ""),
        content_hash=content_hash,
        source_ami=source_ami,
        git_commit=commit,
        reused=False,
        ami_name=packer.ami_name(plan.variables, content_hash),
        host=plan.host,
        mode=plan.mode,
    )
