"""refresh-servers: the article's `devops-refresh-servers` Jenkins job, `ansible-playbook -i inventory.ini
internal_hosts.yml`, as a Prefect flow.

Every selected host is refreshed; the flow fails when any host failed or was unreachable, naming those
hosts and their failing tasks, after the others have run. The recap is a table artifact and the return
value. The vault password comes from a Secret block, never from a parameter.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import BaseModel, Field, StringConstraints, field_validator

import flows  # noqa: F401 - the engine fix (flows/engine.py), also when Prefect loads this file by path
from blocks import VAULT_BLOCK
from tasks import audit
from tasks.ansible import (
    ANSIBLE_DIR,
    LIMIT_PATTERN,
    PATH_MAX,
    PATH_PATTERN,
    TAGS_PATTERN,
    VAR_NAME_PATTERN,
    PlaybookResult,
    PlaybookSpec,
    check_extra_vars,
    publish_recap,
    run_playbook,
    validate_spec,
)
from tasks.preflight import check_playbook
from tasks.task_runner import StoppingThreadPoolTaskRunner

__all__ = ["AnsibleTarget", "PlaybookResult", "refresh_servers"]

BLOCK_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"


class AnsibleTarget(BaseModel):
    """Which playbook runs against which hosts (paths relative to infra/ansible, or absolute)."""

    playbook: str = Field(
        default="internal_hosts.yml",
        min_length=1,
        max_length=PATH_MAX,
        pattern=PATH_PATTERN,
        description="Playbook under infra/ansible (a regular, non-executable file).",
    )
    inventory: str = Field(
        default="inventory.ini",
        min_length=1,
        max_length=PATH_MAX,
        pattern=PATH_PATTERN,
        description="Static ini/yaml inventory under infra/ansible (never an executable script).",
    )
    limit: str | None = Field(
        default=None,
        max_length=256,
        pattern=LIMIT_PATTERN,
        description="Ansible host pattern restricting the run, e.g. 'xwiki' or 'web*:!web3'.",
    )
    tags: str | None = Field(
        default=None,
        max_length=2048,
        pattern=TAGS_PATTERN,
        description="Comma-separated tags to run (all when empty).",
    )
    forks: int = Field(default=5, ge=1, le=100, description="Hosts handled in parallel.")
    extra_vars: dict[Annotated[str, StringConstraints(pattern=VAR_NAME_PATTERN)], Any] = Field(
        default_factory=dict,
        description="Non-secret plain variables: no ansible_* names, no Jinja ({{ {% {#), no names like "
        "*password*, *_pass, *secret*, *token*, *key*.",
        json_schema_extra={"additionalProperties": False},
    )

    @field_validator("extra_vars")
    @classmethod
    def _plain_extra_vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_extra_vars(value)
        return value

    def spec(self, check: bool = False, diff: bool = False) -> PlaybookSpec:
        return PlaybookSpec(**self.model_dump(), check=check, diff=diff)


@flow(name="refresh-servers", log_prints=True, task_runner=StoppingThreadPoolTaskRunner())
def refresh_servers(
    target: AnsibleTarget = AnsibleTarget(),  # noqa: B008 - a pydantic default renders in the UI form
    check: Annotated[bool, Field(description="Check mode: report what would change, change nothing")] = False,
    diff: Annotated[bool, Field(description="Show the diff of each changed file or setting.")] = False,
    vault_block: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=BLOCK_NAME_PATTERN,
            description="Secret block with the vault password (a block name: a-z, 0-9, -).",
        ),
    ] = VAULT_BLOCK,
    timeout_seconds: Annotated[int, Field(ge=10, description="Deadline of the whole playbook run.")] = 3600,
) -> PlaybookResult:
    """Run the playbook on the inventory's servers, publish the recap, fail if any host failed."""
    spec = target.spec(check=check, diff=diff)
    playbook, inventory, _ = validate_spec(spec)  # bounded inputs first, then pre-flight, then the play
    check_playbook(str(playbook), str(inventory), str(ANSIBLE_DIR))
    result = run_playbook(spec, vault_block=vault_block, timeout_seconds=timeout_seconds)
    publish_recap(result, key="refresh-recap")
    if not check:
        for host in result.hosts:
            if host.changed > 0:
                audit.record("host", "changed", host.host, changed_tasks=host.changed, failed=host.broken)
    result.raise_for_failures()
    return result
