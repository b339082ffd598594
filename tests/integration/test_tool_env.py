"""Each tool process gets only the environment it needs (issue 15): the flow process may hold a Prefect
API key, a database URL, the sandbox's registry password; none of it reaches a tool. A real `env` runs
with each tool's allowlist; tests/reliability/test_secret_hygiene.py checks the real tools' /proc environ."""

from __future__ import annotations

import pytest

from tools import process
from tools.ansible import ANSIBLE_ENV
from tools.packer import PACKER_ENV
from tools.terraform import TERRAFORM_ENV

FLOW_PROCESS_SECRETS = {
    "PREFECT_API_KEY": "pnu_flowprocesskey0001",
    "PREFECT_API_AUTH_STRING": "admin:flowprocessauth0002",
    "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://u:dbpass0003@h/db",
    "DATABASE_URL": "postgres://u:dbpass0004@h/db",
    "DEVOPS_REGISTRY_PASSWORD": "registrypass0005",
    "DOCKER_AUTH_CONFIG": '{"auths": {"r": {"auth": "c2VjcmV0MDAwNg=="}}}',
    "GITHUB_TOKEN": "ghp_token0007",
}


def _env_of(inherit: tuple[str, ...]) -> dict[str, str]:
    result = process.run(["env"], inherit=inherit, capture_stdout=True, log_line=lambda s, line: False)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize(
    ("tool", "inherit", "own"),
    [
        ("terraform", TERRAFORM_ENV, {"TF_LOG": "WARN", "AWS_CA_BUNDLE": "/etc/ca.pem"}),
        ("packer", PACKER_ENV, {"PACKER_LOG": "1", "AWS_CA_BUNDLE": "/etc/ca.pem"}),
        ("ansible", ANSIBLE_ENV, {"ANSIBLE_FORKS": "5", "SSH_AUTH_SOCK": "/tmp/agent.sock"}),
        ("git and other helpers", process.BASE_ENV, {"LANG": "C.UTF-8"}),
    ],
)
def test_a_tool_gets_its_own_settings_and_no_other_secret(
    monkeypatch: pytest.MonkeyPatch, tool: str, inherit: tuple[str, ...], own: dict[str, str]
) -> None:
    for key, value in {**FLOW_PROCESS_SECRETS, **own}.items():
        monkeypatch.setenv(key, value)
    env = _env_of(inherit)
    leaked = sorted(k for k in FLOW_PROCESS_SECRETS if k in env)
    assert leaked == [], f"{tool} received {leaked}"
    assert all(v not in "\n".join(env.values()) for v in FLOW_PROCESS_SECRETS.values())
    for key, value in own.items():
        assert env.get(key) == value, f"{tool} lost its own setting {key}"
    assert env.get("PATH"), "PATH must reach every tool"


def test_the_default_is_the_base_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_KEY", FLOW_PROCESS_SECRETS["PREFECT_API_KEY"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-git-0008")
    result = process.run(["env"], capture_stdout=True, log_line=lambda s, line: False)
    assert "PREFECT_API_KEY" not in result.stdout and "AWS_SECRET_ACCESS_KEY" not in result.stdout
