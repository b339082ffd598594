"""Packer tasks: the bake of one host (`bake_host`): plan it (layer the var files, resolve the source AMI,
compute the content hash, the commit and the AMI name), then, inside the slot of that content, reuse an
AMI that already has it or run Packer (validate + build), record the AMI, the audit event and the
artifact.

Skips the bake when an available AMI already carries the same content hash (template, layered
variables, provisioner files, source AMI). One bake of one content at a time (the strict global
concurrency limit `bake-<host>-<hash12>`, tasks/limits.py), from the content-hash lookup until the AMI is
recorded (`baked_at` tag): two bakes of the same content end with one AMI, the second reusing the
first's; bakes of other content run beside it. Packer never deregisters anything (no force_deregister):
the AMI name carries the content hash, and an AMI of that name left untagged by an interrupted bake is
adopted. prune-images deregisters an AMI only inside the slot of its content, after re-checking that it
is not the host's latest bake record (nor otherwise in use)."""

from __future__ import annotations

import time
from typing import Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, AwsCredentials, resolve
from tasks import audit
from tasks.aws import endpoint, find_baked_image, record_bake, resolve_source_ami
from tasks.limits import BAKE_LEASE_SECONDS, ensure_bake_limit, holding
from tools import aws, packer
from tools.errors import BakeFailed, retry_if_transient
from tools.process import default_logger

__all__ = [
    "BakePlan",
    "BakeResult",
    "BakeSpec",
    "available",
    "bake_host",
    "bake_tags",
    "plan_bake",
    "run_bake",
]

available = packer.available  # the var files of a layer (host, os, mode): the flow's parameter choices

HostName = Literal[tuple(available("host"))]  # type: ignore[valid-type]
OsName = Literal[tuple(available("os"))]  # type: ignore[valid-type]
ModeName = Literal[tuple(available("mode"))]  # type: ignore[valid-type]

# The bake's progress artifact is written at most this often (and once at the end): Packer prints a
# line per step, and each update is an API call.
PROGRESS_EVERY_SECONDS = 2.0


class BakeSpec(BaseModel):
    host: HostName = Field("xwiki", description="Host var file under infra/packer/vars/host")
    os: OsName = Field("ubuntu-18.04", description="OS var file under infra/packer/vars/os")
    mode: ModeName = Field("build", description="Mode var file under infra/packer/vars/mode (build or ci)")
    environment: str | None = Field(
        None, description="Overrides the layered `environment` tag (e.g. dev, prod)"
    )


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
    """A progress artifact that follows Packer's steps, so a person sees how far a long bake is: written
    at most every PROGRESS_EVERY_SECONDS, and at the end (`finish`)."""

    def __init__(self, host: str) -> None:
        self.done = 0.0
        self.written = 0.0
        self.written_at = time.monotonic()
        self.artifact_id = create_progress_artifact(
            progress=0.0, key=f"bake-progress-{host}", description=f"packer build of {host}"
        )

    def update(self, percent: float) -> None:
        self.done = max(self.done, percent)
        if self.done > self.written and time.monotonic() - self.written_at >= PROGRESS_EVERY_SECONDS:
            self._write()

    def finish(self) -> None:
        self.done = 100.0
        self._write()

    def _write(self) -> None:
        update_progress_artifact(artifact_id=self.artifact_id, progress=self.done)
        self.written, self.written_at = self.done, time.monotonic()

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
    progress.finish()
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


def bake_host(spec: BakeSpec, aws_block: str = AWS_BLOCK) -> BakeResult:
    """The whole bake of one host, shared by bake-image, ami-rollout and the bench's fan-out."""
    plan = plan_bake(spec.host, spec.os, spec.mode, spec.environment, aws_block)
    digest = plan.content_hash
    host = plan.variables.get("hostname") or spec.host
    with holding(ensure_bake_limit(host, digest), BAKE_LEASE_SECONDS):
        existing = find_baked_image(digest, aws_block, plan.ami_name)
        if existing is None:
            result = run_bake(plan, digest, plan.source_ami, plan.git_commit, aws_block)
        else:
            default_logger().info(
                "reusing %s: an available AMI already has content hash %s; bake skipped",
                existing.image_id,
                digest[:12],
            )
            result = BakeResult(
                ami_id=existing.image_id,
                region=plan.variables.get("region", ""),
                content_hash=digest,
                source_ami=plan.source_ami,
                git_commit=existing.tags.get("git_commit", plan.git_commit),
                reused=True,
                ami_name=existing.name,
                host=spec.host,
                mode=spec.mode,
            )
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
        markdown=_bake_markdown(spec, plan, result),
        description=f"AMI for {spec.host}",
    )
    return result


def _bake_markdown(spec: BakeSpec, plan: BakePlan, result: BakeResult) -> str:
    return "\n".join(
        [
            f"# Bake `{spec.host}` ({spec.os}, {spec.mode})",
            "",
            f"- AMI: `{result.ami_id}` ({result.region})"
            + (" **reused, bake skipped**" if result.reused else ""),
            f"- content hash: `{plan.content_hash}`",
            f"- source AMI: `{plan.source_ami}`",
            f"- git commit: `{result.git_commit}`",
            f"- var files: {' -> '.join(f'`{p}`' for p in plan.files)}",
        ]
    )
