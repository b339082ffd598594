"""Ansible tasks: run a playbook (vault password from a Secret block), publish the recap.

The vault password is loaded from the Secret block inside the task that uses it, registered for
redaction, and handed to `tools.ansible` which writes it to a 0600 file in a temporary directory.
Cancel: the run also stops when the flow run is set to Cancelling in the API (polled every few seconds),
besides Prefect's SIGTERM, which `tools.process` turns into a stop of the whole process group.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from blocks import Secret, resolve
from tools import ansible
from tools.ansible import ANSIBLE_DIR, PlaybookResult, PlaybookSpec, validate_spec
from tools.ansible_inputs import (  # the bounded inputs flows check before any task (flows/refresh.py)
    LIMIT_PATTERN,
    PATH_MAX,
    PATH_PATTERN,
    TAGS_PATTERN,
    VAR_NAME_PATTERN,
    check_extra_vars,
)
from tools.process import default_logger
from tools.redact import redact, register_secret

__all__ = [
    "ANSIBLE_DIR",
    "LIMIT_PATTERN",
    "PATH_MAX",
    "PATH_PATTERN",
    "TAGS_PATTERN",
    "VAR_NAME_PATTERN",
    "PlaybookResult",
    "PlaybookSpec",
    "check_extra_vars",
    "validate_spec",
    "publish_recap",
    "run_playbook",
]

CANCEL_POLL_SECONDS = 2.0


@task(name="ansible-playbook", cache_policy=NO_CACHE, task_run_name="ansible {spec.playbook}")
def run_playbook(
    spec: PlaybookSpec, vault_block: str | None = None, timeout_seconds: int = 3600
) -> PlaybookResult:
    """Run the playbook and return its recap. Never retried: a playbook changes servers.
    The inputs are validated (in this process, no process started) before the vault block is loaded."""
    ansible.validate_spec(spec)
    vault_password = _vault_password(vault_block) if vault_block else None
    result = ansible.run_playbook(
        spec,
        vault_password=vault_password,
        should_cancel=_cancel_requested(),
        timeout=timeout_seconds,
        logger=default_logger(),
    )
    logger = default_logger()
    for host in result.hosts:
        logger.info(
            "%s: ok=%d changed=%d failed=%d unreachable=%d skipped=%d rescued=%d",
            host.host,
            host.ok,
            host.changed,
            host.failed,
            host.unreachable,
            host.skipped,
            host.rescued,
        )
    return result


@task(name="ansible-recap", cache_policy=NO_CACHE)
def publish_recap(result: PlaybookResult, key: str = "ansible-recap") -> None:
    """The per-host recap as a table artifact, and the failures as markdown when there are any."""
    mode = "check mode" if result.check else "run"
    create_table_artifact(
        key=key,
        table=result.table(),
        description=redact(f"PLAY RECAP of {result.playbook} ({mode}): exit code {result.exit_code}"),
    )
    if result.failures:
        lines = [f"# {result.playbook}: failed hosts", "", "| Host | Task | Message |", "|---|---|---|"]
        for f in result.failures:
            task_name = "(unreachable)" if f.unreachable else f.task
            lines.append(f"| {f.host} | {_cell(task_name)} | {_cell(f.message)} |")
        create_markdown_artifact(key=f"{key}-failures", markdown=redact("\n".join(lines)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _vault_password(block_name: str) -> str:
    secret = resolve.load(Secret, block_name)
    value = secret.get()
    if not isinstance(value, str) or not value:
        raise ValueError(f"Secret block {block_name!r} does not hold a vault password string")
    register_secret(value)
    return value


def _cancel_requested() -> Callable[[], bool]:
    """A `should_cancel` that asks the API (at most every few seconds) whether this flow run is cancelling."""
    ctx = FlowRunContext.get()
    flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
    last = {"at": 0.0, "value": False}

    def should_cancel() -> bool:
        if flow_run_id is None or last["value"]:
            return bool(last["value"])
        now = time.monotonic()
        if now - last["at"] < CANCEL_POLL_SECONDS:
            return False
        last["at"] = now
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run_id).state
            last["value"] = bool(state and (state.is_cancelling() or state.is_cancelled()))
        except Exception:  # noqa: BLE001 - an API hiccup must not stop a run
            return False
        return bool(last["value"])

    return should_cancel
