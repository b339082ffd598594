"""The one mapping of an AWS credentials block to a tool's environment (Terraform, Packer).

Non-secret settings go in the first dict, the keys (and the session token of temporary STS credentials)
in the second, which the process runner passes as `secret_env`: registered for redaction, never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.redact import register_secret

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials


def aws_environment(
    creds: AwsCredentials, region: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(env, secret_env) for a tool that talks to AWS with `creds`; `region` when the block has none."""
    region = creds.region_name or region or ""
    env = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region} if region else {}
    if creds.profile_name:
        env["AWS_PROFILE"] = creds.profile_name
    secret_env: dict[str, str] = {}
    if creds.aws_access_key_id:
        secret_env["AWS_ACCESS_KEY_ID"] = creds.aws_access_key_id
    if creds.aws_secret_access_key:
        secret_env["AWS_SECRET_ACCESS_KEY"] = creds.aws_secret_access_key.get_secret_value()
    if creds.aws_session_token:
        secret_env["AWS_SESSION_TOKEN"] = creds.aws_session_token.get_secret_value()
    for value in secret_env.values():
        register_secret(value)
    return env, secret_env
