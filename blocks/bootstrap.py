"""Create or update the block documents devops-flows needs, idempotently: `python -m blocks.bootstrap`.

Values come from the environment, falling back to the sandbox's env file (`scripts/sandbox up`):

    DOCKER_HOST                                      -> DockerHost            devops-docker
    DEVOPS_REGISTRY, _USER, _PASSWORD                -> DockerRegistryCreds   devops-registry
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (optional)  -> AwsCredentials        devops-aws
    DEVOPS_TF_STATE_BUCKET                           -> TerraformBackend      devops-tf-backend
    DEVOPS_VAULT_PASSWORD                            -> Secret                devops-ansible-vault
    DEVOPS_APP_SECRETS (JSON object name -> value)   -> AppSecrets            devops-app-secrets
    DEVOPS_ALERT_WEBHOOK_URL (optional)              -> webhook (Slack JSON)  devops-alerts

Prints block names only, never a value. For real AWS: leave AWS_ENDPOINT_URL unset. Every secret must
have at least 8 characters (`tools.redact.MIN_SECRET_LEN`); a shorter one is refused before any save.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from blocks import (
    APP_SECRETS_BLOCK,
    AWS_BLOCK,
    DOCKER_HOST_BLOCK,
    NOTIFY_BLOCK,
    REGISTRY_BLOCK,
    TF_BACKEND_BLOCK,
    VAULT_BLOCK,
    AppSecrets,
    AwsClientParameters,
    AwsCredentials,
    DockerHost,
    DockerRegistryCredentials,
    Secret,
    TerraformBackend,
    slack_webhook,
)
from tools.errors import InvalidInput
from tools.redact import require_secret_length
from tools.settings import load_env


def settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The sandbox env file overlaid with the process environment (the environment wins)."""
    merged = dict(load_env())
    merged.update({k: v for k, v in (environ if environ is not None else os.environ).items() if v})
    return merged


def check_secrets(cfg: Mapping[str, str], vault: str | None, app: Mapping[str, str] | None) -> None:
    """InvalidInput naming the first secret shorter than MIN_SECRET_LEN, before any block is saved.

    The AWS secret key is exempt when an endpoint (an emulator such as moto, whose convention is the
    dummy key `testing`) is set: real AWS secret keys are 40 characters."""
    require_secret_length(cfg.get("DEVOPS_REGISTRY_PASSWORD"), "DEVOPS_REGISTRY_PASSWORD")
    if not cfg.get("AWS_ENDPOINT_URL"):
        require_secret_length(cfg.get("AWS_SECRET_ACCESS_KEY"), "AWS_SECRET_ACCESS_KEY")
    require_secret_length(vault, "the Ansible vault password (DEVOPS_VAULT_PASSWORD)")
    for name, value in (app or {}).items():
        if not isinstance(value, str):
            raise InvalidInput(f"DEVOPS_APP_SECRETS[{name!r}] must be a string")
        require_secret_length(value, f"DEVOPS_APP_SECRETS[{name!r}]")
    require_secret_length(cfg.get("DEVOPS_ALERT_WEBHOOK_URL"), "DEVOPS_ALERT_WEBHOOK_URL")


def bootstrap(environ: Mapping[str, str] | None = None) -> list[str]:
    """Save every block whose inputs are present; returns the names saved. Secrets shorter than
    MIN_SECRET_LEN are refused (InvalidInput) before anything is saved."""
    cfg = settings(environ)
    saved: list[str] = []
    vault = cfg.get("DEVOPS_VAULT_PASSWORD")
    try:
        app = json.loads(cfg["DEVOPS_APP_SECRETS"]) if cfg.get("DEVOPS_APP_SECRETS") else None
    except ValueError:
        raise InvalidInput("DEVOPS_APP_SECRETS must be a JSON object of name -> value") from None
    if app is not None and not isinstance(app, dict):
        raise InvalidInput("DEVOPS_APP_SECRETS must be a JSON object of name -> value")
    check_secrets(cfg, vault, app)

    def save(block, name: str) -> None:  # noqa: ANN001
        block.save(name, overwrite=True)
        saved.append(name)

    if cfg.get("DOCKER_HOST"):
        save(DockerHost(base_url=cfg["DOCKER_HOST"]), DOCKER_HOST_BLOCK)
    else:
        save(DockerHost(), DOCKER_HOST_BLOCK)
    if cfg.get("DEVOPS_REGISTRY") and cfg.get("DEVOPS_REGISTRY_PASSWORD"):
        save(
            DockerRegistryCredentials(
                registry_url=cfg["DEVOPS_REGISTRY"],
                username=cfg.get("DEVOPS_REGISTRY_USER", "devops"),
                password=cfg["DEVOPS_REGISTRY_PASSWORD"],
                reauth=True,
            ),
            REGISTRY_BLOCK,
        )
    if cfg.get("AWS_ACCESS_KEY_ID"):
        params = (
            AwsClientParameters(endpoint_url=cfg["AWS_ENDPOINT_URL"])
            if cfg.get("AWS_ENDPOINT_URL")
            else AwsClientParameters()
        )
        save(
            AwsCredentials(
                aws_access_key_id=cfg["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=cfg.get("AWS_SECRET_ACCESS_KEY"),
                region_name=cfg.get("AWS_DEFAULT_REGION", "eu-central-1"),
                aws_client_parameters=params,
            ),
            AWS_BLOCK,
        )
    if cfg.get("DEVOPS_TF_STATE_BUCKET"):
        save(
            TerraformBackend(
                bucket=cfg["DEVOPS_TF_STATE_BUCKET"],
                region=cfg.get("AWS_DEFAULT_REGION", "eu-central-1"),
                endpoint_url=cfg.get("AWS_ENDPOINT_URL") or None,
            ),
            TF_BACKEND_BLOCK,
        )
    if vault:
        save(Secret(value=vault), VAULT_BLOCK)
    if app is not None:
        save(AppSecrets(values=app), APP_SECRETS_BLOCK)
    if cfg.get("DEVOPS_ALERT_WEBHOOK_URL"):
        save(slack_webhook(cfg["DEVOPS_ALERT_WEBHOOK_URL"]), NOTIFY_BLOCK)
    return saved


def main() -> int:
    for name in bootstrap():
        print(f"block saved: {name}")  # noqa: T201 - a command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
