"""Prefect blocks used by devops-flows.

Secrets never travel as flow parameters: tasks load these blocks by name and unwrap the secret at
the point of use (where it is also registered for redaction).

Standard block types we rely on (`prefect block register -m blocks` registers ours and these):
- `DockerHost` (prefect-docker): which engine builds, runs and deploys containers.
- `DockerRegistryCredentials` (prefect-docker): registry URL, user, password (SecretStr).
- `AwsCredentials` (prefect-aws): keys, region and an optional endpoint (moto in the sandbox).
- `Secret` (prefect): the Ansible vault password.
- `CustomWebhookNotificationBlock` (prefect): where failure and drift notifications go, as a
  Slack-compatible JSON payload (`{"text": ...}`); works with a Slack incoming webhook URL or any receiver.
Ours: `AppSecrets` (the application's secret environment) and `TerraformBackend` (remote state).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.blocks.system import Secret
from pydantic import Field, SecretStr

from tools.errors import InvalidInput
from tools.redact import register_secret

if TYPE_CHECKING:
    from prefect_aws import AwsClientParameters, AwsCredentials
    from prefect_docker import DockerHost, DockerRegistryCredentials

# Imported on first use: a release never needs prefect-aws (~0.4 s of import with aiobotocore and its
# ECS worker), a rollout never needs prefect-docker (~0.15 s), and every flow run is a fresh process.
_LAZY = {
    "AwsClientParameters": "prefect_aws",
    "AwsCredentials": "prefect_aws",
    "DockerHost": "prefect_docker",
    "DockerRegistryCredentials": "prefect_docker",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


DOCKER_HOST_BLOCK = "devops-docker"
REGISTRY_BLOCK = "devops-registry"
AWS_BLOCK = "devops-aws"
TF_BACKEND_BLOCK = "devops-tf-backend"
VAULT_BLOCK = "devops-ansible-vault"
APP_SECRETS_BLOCK = "devops-app-secrets"
NOTIFY_BLOCK = "devops-alerts"
# The builder images that may receive AppSecrets by default: the article's sbt image and the sandbox's
# stand-in builder (any tag of devops-flows/sbt-builder).
DEFAULT_SECRET_BUILDERS = ("hseeberger/scala-sbt:8u181_2.12.8_1.2.8", "devops-flows/sbt-builder")


class AppSecrets(Block):
    """Secret environment variables of an application (the article's PROJECT_DB_PASSWORD, S3 keys...).

    Their names are visible, their values are not; they are passed to containers as environment and
    never logged.
    """

    _block_type_name = "devops-flows App Secrets"
    _description = "Secret environment variables for an application's build and runtime containers."

    values: dict[str, SecretStr] = Field(
        default_factory=dict,
        title="Secret environment",
        description="Environment variable name -> secret value, e.g. PROJECT_DB_PASSWORD.",
        examples=[{"PROJECT_DB_PASSWORD": "change-me"}],
    )

    builder_images: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_BUILDERS),
        title="Builder images allowed",
        description="build-app hands these values only to these builder images: an exact reference "
        "(repo:tag or repo@sha256:...), or a repository alone for any of its tags.",
        examples=[list(DEFAULT_SECRET_BUILDERS)],
    )

    def environment(self) -> dict[str, str]:
        """The unwrapped values, each registered for redaction."""
        return {name: register_secret(value.get_secret_value()) or "" for name, value in self.values.items()}

    def allows_builder(self, image: str) -> bool:
        repository = _repository_of(image)
        return any(entry == image or entry == repository for entry in self.builder_images)

    def check_builder(self, image: str, block_name: str = "") -> None:
        """InvalidInput (before any container starts) when `image` may not see these secrets."""
        from tools.errors import InvalidInput

        if not self.allows_builder(image):
            raise InvalidInput(
                f"builder image {image!r} is not allowed to receive the secrets of the AppSecrets block "
                f"{block_name!r}: allowed are {self.builder_images} (add it to the block's builder_images, "
                "or build without the app secrets block)"
            )


def _repository_of(image: str) -> str:
    """`repo` of `repo:tag` / `repo@sha256:...` (a registry host may carry a port)."""
    ref = image.partition("@")[0]
    head, _, last = ref.rpartition("/")
    last = last.partition(":")[0]
    return f"{head}/{last}" if head else last


WEBHOOK_URL_SECRET = "webhook_url"  # noqa: S105 - the name of the Secret block's field, not a secret


def slack_webhook(url: str | SecretStr) -> CustomWebhookNotificationBlock:
    """A webhook block that posts Slack-compatible `{"text": ...}` JSON to `url`.

    The URL (a Slack webhook URL is itself the credential) is kept in the block's secret values and the
    `url` field is only the placeholder `{{webhook_url}}`: the UI and the API show it obfuscated, and it
    is substituted at send time by Prefect's own templating (server-side automations included).
    """
    from urllib.parse import urlparse

    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parsed = urlparse(raw)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise InvalidInput("the alert webhook URL must be an http(s) URL with a host")
    register_secret(raw)
    host = parsed.hostname or ""
    return CustomWebhookNotificationBlock(
        name="devops-flows alerts",
        url="{{" + WEBHOOK_URL_SECRET + "}}",
        method="POST",
        json_data={"text": "{{subject}}\n{{body}}"},
        secrets={WEBHOOK_URL_SECRET: raw},
        allow_private_urls=host in {"127.0.0.1", "localhost", "::1"},
    )


def register_notification_secrets(block: Block) -> None:
    """Register a loaded notification block's secret values (and a plain-text URL) for redaction."""
    for name, value in dict(block).items():
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif hasattr(value, "get_secret_value"):  # SecretDict of a custom webhook
            for secret in (value.get_secret_value() or {}).values():
                if isinstance(secret, str):
                    register_secret(secret)
        elif name == "url" and isinstance(value, str) and "{{" not in value:
            register_secret(value)  # a block saved before the URL became a secret


class TerraformBackend(Block):
    """Where Terraform keeps its remote state (S3 with a lock file)."""

    _block_type_name = "devops-flows Terraform Backend"
    _description = "S3 remote state for Terraform stacks, with native S3 locking."

    bucket: str = Field(
        title="State bucket",
        description="S3 bucket holding the state files.",
        examples=["devops-flows-tfstate"],
    )
    region: str = Field(default="eu-central-1", title="Region", description="Region of the state bucket.")
    key_prefix: str = Field(
        default="", title="Key prefix", description="Prefix for state keys; the stack path is appended."
    )
    endpoint_url: str | None = Field(
        default=None,
        title="S3 endpoint",
        description="Custom S3 endpoint (moto in the sandbox); empty for real AWS.",
        examples=["http://127.0.0.1:4566"],
    )
    lock_timeout_seconds: int = Field(
        default=30, ge=0, le=3600, title="Lock timeout", description="How long to wait for a held state lock."
    )
    running_wait_seconds: int = Field(
        default=1200,
        ge=0,
        le=86400,
        title="Wait for a dead run's terraform",
        description="A run whose flow process died may leave its terraform running (it keeps writing the "
        "state): the next run waits this long for it to exit, then fails with TerraformStillRunning.",
    )
    plan_timeout_seconds: int = Field(
        default=900,
        ge=30,
        le=86400,
        title="Plan deadline",
        description="Deadline of each reading command (init, plan, show, output), in seconds.",
    )
    apply_timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=86400,
        title="Apply deadline",
        description="Deadline of each writing command (apply, destroy, import), in seconds; a large apply "
        "takes long.",
    )
    apply_stop_seconds: int = Field(
        default=900,
        ge=600,
        le=7200,
        title="Apply stop window",
        description="After the one SIGINT of a cancel or deadline, how long Terraform may take to finish its "
        "provider calls and write the state before it is killed (a kill may lose the state write).",
    )
    plan_stop_seconds: int = Field(
        default=120,
        ge=10,
        le=3600,
        title="Plan stop window",
        description="After the one SIGINT, how long a reading command may take to stop before it is killed.",
    )


__all__ = [
    "APP_SECRETS_BLOCK",
    "AWS_BLOCK",
    "DOCKER_HOST_BLOCK",
    "NOTIFY_BLOCK",
    "REGISTRY_BLOCK",
    "TF_BACKEND_BLOCK",
    "VAULT_BLOCK",
    "AppSecrets",
    "AwsClientParameters",
    "AwsCredentials",
    "DockerHost",
    "DockerRegistryCredentials",
    "Secret",
    "CustomWebhookNotificationBlock",
    "slack_webhook",
    "register_notification_secrets",
    "WEBHOOK_URL_SECRET",
    "TerraformBackend",
]
