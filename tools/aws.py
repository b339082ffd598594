"""boto3 helpers for AMIs, launch templates and auto scaling groups. Clients come from the caller
(tasks build them with `AwsCredentials.get_client`, which honours the sandbox endpoint)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError
from pydantic import BaseModel, Field

from tools.errors import AwsError, looks_transient

PROJECT_TAG = "project"
PROJECT = "devops-flows"
T = TypeVar("T")

__all__ = [
    "AmiInfo",
    "AutoScalingGroupFacts",
    "LaunchTemplateFacts",
    "auto_scaling_group_facts",
    "LaunchTemplateState",
    "call",
    "deregister",
    "find_by_hash",
    "launch_template_facts",
    "launch_template_state",
    "project_images",
    "read_object",
    "referenced_image_ids",
    "source_image",
]


class AmiInfo(BaseModel):
    image_id: str
    name: str = ""
    state: str = ""
    created: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    snapshot_ids: list[str] = Field(default_factory=list)

    @classmethod
    def from_api(cls, image: dict[str, Any]) -> AmiInfo:
        return cls(
            image_id=image["ImageId"],
            name=image.get("Name", ""),
            state=image.get("State", ""),
            created=image.get("CreationDate", ""),
            tags={t["Key"]: t["Value"] for t in image.get("Tags") or []},
            snapshot_ids=[
                b["Ebs"]["SnapshotId"]
                for b in image.get("BlockDeviceMappings") or []
                if (b.get("Ebs") or {}).get("SnapshotId")
            ],
        )

    @property
    def created_at(self) -> datetime:
        try:
            return datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        except ValueError:
            return datetime.min


class LaunchTemplateState(BaseModel):
    launch_template_id: str
    latest_version: int
    latest_image_id: str | None
    asg_name: str | None = None
    asg_launch_template_id: str | None = None
    asg_version: str | None = None


class LaunchTemplateFacts(BaseModel):
    """A launch template's versions and the image of its latest version (None: unknown or not set)."""

    launch_template_id: str
    latest_version: int | None = None
    default_version: int | None = None
    latest_image_id: str | None = None


class AutoScalingGroupFacts(BaseModel):
    """Which launch template (id, version) an auto scaling group launches from."""

    name: str
    launch_template_id: str | None = None
    launch_template_version: str | None = None


def call(what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    """One boto3 call; botocore errors become AwsError carrying AWS's own message (transient if 5xx etc.)."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"{err.get('Code', 'Error')}: {err.get('Message', str(exc))}"
        raise AwsError(
            f"{what} failed: {message}", tail=[message], transient=status >= 500 or looks_transient(message)
        ) from exc
    except BotoCoreError as exc:
        raise AwsError(f"{what} failed: {exc}", tail=[str(exc)], transient=looks_transient(str(exc))) from exc
    except ResponseParserError as exc:  # an endpoint that answered with something else than the API (HTML)
        message = f"{what} failed: the endpoint did not answer in the API's format"
        raise AwsError(message, tail=[str(exc)[:400]]) from exc


def source_image(ec2: Any, name_filter: str, owner: str) -> AmiInfo | None:
    """The newest image the Packer `source_ami_filter` would pick (hvm, ebs, name, owner)."""
    filters = [
        {"Name": "name", "Values": [name_filter]},
        {"Name": "virtualization-type", "Values": ["hvm"]},
        {"Name": "root-device-type", "Values": ["ebs"]},
    ]
    images = call("describe_images", ec2.describe_images, Owners=[owner], Filters=filters)["Images"]
    if not images:
        return None
    return AmiInfo.from_api(max(images, key=lambda i: i.get("CreationDate", "")))


def project_images(ec2: Any, extra: dict[str, str] | None = None) -> list[AmiInfo]:
    """Self-owned AMIs tagged project=devops-flows (plus `extra` tag filters), newest first."""
    filters = [{"Name": f"tag:{PROJECT_TAG}", "Values": [PROJECT]}]
    filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in (extra or {}).items()]
    images = call("describe_images", ec2.describe_images, Owners=["self"], Filters=filters)["Images"]
    return sorted((AmiInfo.from_api(i) for i in images), key=lambda a: a.created, reverse=True)


def find_by_hash(ec2: Any, digest: str) -> AmiInfo | None:
    found = [a for a in project_images(ec2, {"content_hash": digest}) if a.state == "available"]
    return found[0] if found else None


def launch_template_state(
    ec2: Any, autoscaling: Any, launch_template_id: str, asg_name: str | None
) -> LaunchTemplateState:
    versions = call(
        "describe_launch_template_versions",
        ec2.describe_launch_template_versions,
        LaunchTemplateId=launch_template_id,
        Versions=["$Latest"],
    )["LaunchTemplateVersions"]
    if not versions:
        raise AwsError(f"launch template {launch_template_id} has no versions")
    latest = versions[0]
    state = LaunchTemplateState(
        launch_template_id=launch_template_id,
        latest_version=int(latest["VersionNumber"]),
        latest_image_id=latest["LaunchTemplateData"].get("ImageId"),
    )
    if asg_name:
        groups = call(
            "describe_auto_scaling_groups",
            autoscaling.describe_auto_scaling_groups,
            AutoScalingGroupNames=[asg_name],
        )["AutoScalingGroups"]
        if groups:
            spec = groups[0].get("LaunchTemplate") or {}
            state.asg_name = asg_name
            state.asg_launch_template_id = spec.get("LaunchTemplateId")
            state.asg_version = spec.get("Version")
    return state


def referenced_image_ids(ec2: Any) -> set[str]:
    """AMIs used by any version of any launch template, or by any instance that is not terminated."""
    used: set[str] = set()
    templates = call("describe_launch_templates", ec2.describe_launch_templates).get("LaunchTemplates", [])
    for lt in templates:
        versions = call(
            "describe_launch_template_versions",
            ec2.describe_launch_template_versions,
            LaunchTemplateId=lt["LaunchTemplateId"],
        )["LaunchTemplateVersions"]
        used.update(
            v["LaunchTemplateData"]["ImageId"] for v in versions if v["LaunchTemplateData"].get("ImageId")
        )
    reservations = call(
        "describe_instances",
        ec2.describe_instances,
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}],
    )["Reservations"]
    used.update(i["ImageId"] for r in reservations for i in r["Instances"])
    return used


def deregister(ec2: Any, image: AmiInfo) -> None:
    call("deregister_image", ec2.deregister_image, ImageId=image.image_id)
    for snapshot in image.snapshot_ids:
        call("delete_snapshot", ec2.delete_snapshot, SnapshotId=snapshot)


def tag(ec2: Any, resource_ids: Iterable[str], tags: dict[str, str]) -> None:
    call(
        "create_tags",
        ec2.create_tags,
        Resources=list(resource_ids),
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )


def read_object(s3: Any, bucket: str, key: str) -> bytes | None:
    """The body of an S3 object, or None when it does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        message = f"{exc.response.get('Error', {}).get('Code', 'Error')}: {exc}"
        raise AwsError(f"get_object s3://{bucket}/{key} failed: {message}", tail=[message]) from exc
    except BotoCoreError as exc:
        raise AwsError(f"get_object s3://{bucket}/{key} failed: {exc}", transient=True) from exc


def write_object(s3: Any, bucket: str, key: str, body: bytes) -> None:
    call(f"put_object s3://{bucket}/{key}", s3.put_object, Bucket=bucket, Key=key, Body=body)


def delete_object(s3: Any, bucket: str, key: str) -> None:
    call(f"delete_object s3://{bucket}/{key}", s3.delete_object, Bucket=bucket, Key=key)


def launch_template_facts(ec2: Any, launch_template_ids: Iterable[str]) -> list[LaunchTemplateFacts]:
    """Latest/default version and latest version's image of each launch template that exists (one that
    does not is left out)."""
    found = []
    for lt_id in launch_template_ids:
        try:
            [lt] = call(
                "describe_launch_templates", ec2.describe_launch_templates, LaunchTemplateIds=[lt_id]
            )["LaunchTemplates"] or [None]
        except AwsError as exc:
            if "NotFound" in exc.message or "does not exist" in exc.message:
                continue
            raise
        if lt is None:
            continue
        latest = int(lt["LatestVersionNumber"])
        found.append(
            LaunchTemplateFacts(
                launch_template_id=lt_id,
                latest_version=latest,
                default_version=int(lt["DefaultVersionNumber"]),
                latest_image_id=template_image(ec2, lt_id, str(latest)),
            )
        )
    return found


def template_image(ec2: Any, launch_template_id: str, version: str) -> str | None:
    """The image of a launch template version ("$Latest", "$Default" or a number)."""
    found = call(
        "describe_launch_template_versions",
        ec2.describe_launch_template_versions,
        LaunchTemplateId=launch_template_id,
        Versions=[str(version)],
    )["LaunchTemplateVersions"]
    return found[0]["LaunchTemplateData"].get("ImageId") if found else None


def auto_scaling_group_facts(autoscaling: Any, names: Iterable[str]) -> list[AutoScalingGroupFacts]:
    """The launch template (id, version) of each named auto scaling group that exists."""
    names = list(names)
    if not names:
        return []
    groups = call(
        "describe_auto_scaling_groups",
        autoscaling.describe_auto_scaling_groups,
        AutoScalingGroupNames=names,
    )["AutoScalingGroups"]
    return [
        AutoScalingGroupFacts(
            name=g["AutoScalingGroupName"],
            launch_template_id=(g.get("LaunchTemplate") or {}).get("LaunchTemplateId"),
            launch_template_version=(g.get("LaunchTemplate") or {}).get("Version"),
        )
        for g in groups
    ]
