"""Which AMIs are in use: every launch template version, every instance that is not terminated, every
auto scaling group (its launch template, mixed instances policy or launch configuration) and the latest
bake record of each host. boto3 only (clients come from the caller), no Prefect.

Every `describe_*` call is paginated with a page size the caller chooses (a test sets it small):

- NextToken loops, with each API's MaxResults clamped to what AWS accepts (DescribeInstances 5..1000,
  DescribeImages 6..1000, launch templates 1..200, auto scaling 1..100);
- launch template versions are read in MinVersion/MaxVersion windows of one page each (and any NextToken
  followed): complete on AWS and on moto 5.2, which truncates DescribeLaunchTemplateVersions at
  MaxResults without a NextToken;
- moto 5.2 also truncates DescribeLaunchTemplates without a NextToken: a listing whose last page is
  full is read again with the largest page, and the two are merged (one extra call on AWS, only then).

The bake record: a bake (new or reused AMI) tags the AMI `baked_at` (UTC, ISO 8601). A host's latest bake
record is its AMI with the newest `baked_at` (or creation time when untagged): the AMI a rollout of that
host is about to apply, even when the bake reused an old one (which is then not among the newest by
creation time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tools.aws import PROJECT, PROJECT_TAG, AmiInfo, call

DEFAULT_PAGE_SIZE = 100
BAKED_AT_TAG = "baked_at"
LIVE_INSTANCE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")

__all__ = [
    "BAKED_AT_TAG",
    "DEFAULT_PAGE_SIZE",
    "References",
    "bake_time",
    "created_time",
    "now_iso",
    "find_references",
    "latest_bakes",
    "paged",
    "project_images",
    "references_to",
]


@dataclass
class References:
    """image id -> why it is in use ("launch template lt-1 v3", "instance i-1", "ASG web (lt-1 $Latest)")."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, image_id: str | None, reason: str) -> None:
        if image_id:
            self.reasons.setdefault(image_id, []).append(reason)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.reasons

    def why(self, image_id: str) -> str:
        return "; ".join(self.reasons.get(image_id, []))


def _clamp(size: int, low: int, high: int) -> int:
    return max(low, min(high, size))


def paged(
    what: str,
    fn: Callable[..., dict[str, Any]],
    key: str,
    page_size: int,
    size_param: str = "MaxResults",
    **kwargs: Any,
) -> Iterator[list[dict[str, Any]]]:
    """Each page of `key` items, following NextToken until the last page."""
    token = None
    while True:
        args = {**kwargs, size_param: page_size, **({"NextToken": token} if token else {})}
        page = call(what, fn, **args)
        yield page.get(key) or []
        token = page.get("NextToken")
        if not token:
            return


def _all(what: str, fn: Callable[..., dict[str, Any]], key: str, page_size: int, **kwargs: Any) -> list:
    return [item for page in paged(what, fn, key, page_size, **kwargs) for item in page]


def project_images(ec2: Any, page_size: int = DEFAULT_PAGE_SIZE) -> list[AmiInfo]:
    """Self-owned AMIs tagged project=devops-flows, every page, newest first."""
    images = _all(
        "describe_images",
        ec2.describe_images,
        "Images",
        _clamp(page_size, 6, 1000),
        Owners=["self"],
        Filters=[{"Name": f"tag:{PROJECT_TAG}", "Values": [PROJECT]}],
    )
    return sorted((AmiInfo.from_api(i) for i in images), key=created_time, reverse=True)


def bake_time(image: AmiInfo) -> datetime:
    """When a bake last produced or reused the image (its `baked_at` tag), else its creation time."""
    return _parse(image.tags.get(BAKED_AT_TAG) or image.created)


def created_time(image: AmiInfo) -> datetime:
    return _parse(image.created)


def _parse(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def latest_bakes(images: list[AmiInfo]) -> dict[str, str]:
    """host -> the image id of its latest bake record (available images only)."""
    latest: dict[str, AmiInfo] = {}
    for image in images:
        host = image.tags.get("host")
        if (
            host
            and image.state == "available"
            and (host not in latest or bake_time(image) > bake_time(latest[host]))
        ):
            latest[host] = image
    return {host: image.image_id for host, image in latest.items()}


def _launch_templates(ec2: Any, page_size: int) -> list[dict[str, Any]]:
    size = _clamp(page_size, 1, 200)
    pages = list(paged("describe_launch_templates", ec2.describe_launch_templates, "LaunchTemplates", size))
    found = {t["LaunchTemplateId"]: t for page in pages for t in page}
    if len(pages[-1]) >= size and size < 200:  # a full last page: moto truncates without a NextToken
        again = _all("describe_launch_templates", ec2.describe_launch_templates, "LaunchTemplates", 200)
        found.update({t["LaunchTemplateId"]: t for t in again})
    return list(found.values())


def _template_versions(ec2: Any, template: dict[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
    """Every version of one launch template, in windows of one page (MinVersion..MaxVersion)."""
    size = _clamp(page_size, 1, 200)
    latest = int(template.get("LatestVersionNumber") or 1)
    for low in range(1, latest + 1, size):
        yield from _all(
            "describe_launch_template_versions",
            ec2.describe_launch_template_versions,
            "LaunchTemplateVersions",
            size,
            LaunchTemplateId=template["LaunchTemplateId"],
            MinVersion=str(low),
            MaxVersion=str(min(low + size - 1, latest)),
        )


def _add_template_refs(ec2: Any, refs: References, page_size: int) -> None:
    for template in _launch_templates(ec2, page_size):
        for version in _template_versions(ec2, template, page_size):
            refs.add(
                (version.get("LaunchTemplateData") or {}).get("ImageId"),
                f"launch template {template['LaunchTemplateId']} v{version['VersionNumber']}",
            )


def _add_instance_refs(ec2: Any, refs: References, page_size: int) -> None:
    for page in paged(
        "describe_instances",
        ec2.describe_instances,
        "Reservations",
        _clamp(page_size, 5, 1000),
        Filters=[{"Name": "instance-state-name", "Values": list(LIVE_INSTANCE_STATES)}],
    ):
        for reservation in page:
            for instance in reservation.get("Instances") or []:
                state = (instance.get("State") or {}).get("Name", "?")
                refs.add(instance.get("ImageId"), f"instance {instance['InstanceId']} ({state})")


def _template_specs(group: dict[str, Any]) -> list[dict[str, Any]]:
    """The launch template specifications an ASG launches from (its own, or its mixed policy's)."""
    specs = [group["LaunchTemplate"]] if group.get("LaunchTemplate") else []
    mixed = (group.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
    if mixed.get("LaunchTemplateSpecification"):
        specs.append(mixed["LaunchTemplateSpecification"])
    specs += [
        o["LaunchTemplateSpecification"]
        for o in mixed.get("Overrides") or []
        if o.get("LaunchTemplateSpecification")
    ]
    return specs


def _spec_image(ec2: Any, spec: dict[str, Any]) -> str | None:
    ident = (
        {"LaunchTemplateId": spec["LaunchTemplateId"]}
        if spec.get("LaunchTemplateId")
        else {"LaunchTemplateName": spec.get("LaunchTemplateName", "")}
    )
    versions = call(
        "describe_launch_template_versions",
        ec2.describe_launch_template_versions,
        Versions=[str(spec.get("Version") or "$Default")],
        **ident,
    )["LaunchTemplateVersions"]
    return (versions[0].get("LaunchTemplateData") or {}).get("ImageId") if versions else None


def _add_group_refs(ec2: Any, autoscaling: Any, refs: References, page_size: int) -> None:
    size = _clamp(page_size, 1, 100)
    configs: dict[str, str] = {}
    for page in paged(
        "describe_auto_scaling_groups",
        autoscaling.describe_auto_scaling_groups,
        "AutoScalingGroups",
        size,
        size_param="MaxRecords",
    ):
        for group in page:
            name = group["AutoScalingGroupName"]
            for spec in _template_specs(group):
                template = spec.get("LaunchTemplateId") or spec.get("LaunchTemplateName")
                refs.add(
                    _spec_image(ec2, spec), f"ASG {name} ({template} {spec.get('Version') or '$Default'})"
                )
            if group.get("LaunchConfigurationName"):
                configs[group["LaunchConfigurationName"]] = name
    names = sorted(configs)
    for start in range(0, len(names), 50):  # DescribeLaunchConfigurations takes up to 50 names
        for config in _all(
            "describe_launch_configurations",
            autoscaling.describe_launch_configurations,
            "LaunchConfigurations",
            size,
            size_param="MaxRecords",
            LaunchConfigurationNames=names[start : start + 50],
        ):
            name = config["LaunchConfigurationName"]
            refs.add(config.get("ImageId"), f"ASG {configs[name]} (launch configuration {name})")


def find_references(
    ec2: Any, autoscaling: Any, images: list[AmiInfo], page_size: int = DEFAULT_PAGE_SIZE
) -> References:
    """Every reference to any AMI: launch template versions, live instances, ASGs, latest bake records."""
    refs = References()
    _add_template_refs(ec2, refs, page_size)
    _add_instance_refs(ec2, refs, page_size)
    _add_group_refs(ec2, autoscaling, refs, page_size)
    for host, image_id in latest_bakes(images).items():
        refs.add(image_id, f"latest bake of {host}")
    return refs


def references_to(
    ec2: Any, autoscaling: Any, image: AmiInfo, page_size: int = DEFAULT_PAGE_SIZE
) -> tuple[AmiInfo | None, list[str]]:
    """The re-check right before a deregister: the image as it is now (None when gone) and every reason it
    is in use now, the latest bake record of its host read again."""
    current = call(
        "describe_images",
        ec2.describe_images,
        Owners=["self"],
        Filters=[{"Name": "image-id", "Values": [image.image_id]}],
    )
    found = [AmiInfo.from_api(i) for i in current.get("Images") or []]
    if not found:
        return None, []
    now = found[0]
    siblings = []
    host = now.tags.get("host")
    if host:
        siblings = [i for i in project_images(ec2, page_size) if i.tags.get("host") == host]
    refs = find_references(ec2, autoscaling, siblings or [now], page_size)
    return now, refs.reasons.get(now.image_id, [])
