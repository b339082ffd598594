"""Everything the deployments rely on, created idempotently: `python -m deployments.setup`.

- the block documents (blocks.bootstrap);
- the process work pool `prefect deploy --all` targets;
- one strict global concurrency limit per Terraform stack (`concurrency(..., strict=True)` fails when the
  limit does not exist, instead of silently not limiting: PITFALLS.md);
- the failure-notification automation: any deployment run that ends Failed or Crashed posts to the
  `devops-alerts` webhook block. An automation rather than flow hooks, because a crashed run (its process
  killed) runs no hook of its own, while the server still sees the Crashed state and fires.
- one missed-run automation per scheduled deployment (the original job's "service is down before
  another execution" alert): no run of it completed within its expected window (the longest gap between
  two fires of its cron, plus half of it) posts to the same block. A proactive trigger fires on the
  absence of the Completed event, so it also catches a scheduler, worker or server that ran nothing.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from blocks import NOTIFY_BLOCK
from blocks.bootstrap import bootstrap
from deployments.declarations import load
from tools.settings import INFRA_DIR

AUTOMATION_NAME = "devops-flows: notify on failed or crashed deployment runs"
NOTIFICATION_SUBJECT = "Prefect: {{ flow.name }} / {{ deployment.name }} is {{ flow_run.state.name }}"
NOTIFICATION_BODY = (
    "Flow: {{ flow.name }}\n"
    "Deployment: {{ deployment.name }}\n"
    "Run: {{ flow_run.name }} ({{ flow_run.state.name }})\n"
    "Failing step: {{ flow_run.state.message }}\n"
    "{{ flow_run|ui_url }}"
)


def terraform_stacks(root: Path = INFRA_DIR / "terraform") -> list[str]:
    """Stack paths (relative to infra/terraform) holding Terraform files."""
    return sorted(
        {str(p.parent.relative_to(root)) for p in root.rglob("*.tf") if ".terraform" not in p.parts}
    )


def stack_limit_name(stack: str) -> str:
    try:
        from tasks.stack_slot import stack_limit_name as name_for
    except ImportError:  # the Terraform tasks define the canonical name; fall back to the same rule
        return "tf-stack-" + stack.strip("/").replace("/", "-")
    return name_for(stack)


def ensure_work_pools() -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    names = sorted({d.work_pool.name for d in load().deployments})
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass
    return names


def ensure_concurrency_limits() -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for stack in terraform_stacks():
            name = stack_limit_name(stack)
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            created.append(name)
    return created


def ensure_failure_automation() -> str | None:
    """The notification automation, when the webhook block exists. Returns its id."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.blocks.core import Block
    from prefect.exceptions import ObjectNotFound

    try:
        block = Block.load(f"custom-webhook/{NOTIFY_BLOCK}")
    except (ValueError, ObjectNotFound):
        return None
    automation = Automation(
        name=AUTOMATION_NAME,
        description="Posts the flow, deployment, failing step and UI link to the devops-alerts webhook.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block._block_document_id,
                subject=NOTIFICATION_SUBJECT,
                body=NOTIFICATION_BODY,
            )
        ],
    )
    return upsert_automation(automation)


MISSED_RUN_PREFIX = "devops-flows: missed run of "


def expected_window(cron: str, timezone: str = "UTC", samples: int = 60) -> timedelta:
    """The longest gap between two consecutive fires of `cron` (over the next `samples` fires) plus half
    of it: a scheduled run that has not completed by then is missed."""
    from cronsim import CronSim

    fires = CronSim(cron, datetime.now(ZoneInfo(timezone)))
    times = [next(fires) for _ in range(samples)]
    gap = max(later - earlier for earlier, later in zip(times, times[1:], strict=False))
    return gap * 1.5


def missed_run_automation(deployment: str, within: timedelta, block_document_id) -> object:  # noqa: ANN001
    """The proactive automation: fewer than one Completed run of `deployment` within `within` alerts."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification

    return Automation(
        name=f"{MISSED_RUN_PREFIX}{deployment}",
        description=f"No run of deployment {deployment} completed within {within} (its schedule's window).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Completed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment", "prefect.resource.name": deployment},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=f"devops-flows: {deployment} missed its run",
                body=f"No run of deployment {deployment} completed within {within}: "
                "the scheduler, a worker or the job itself is down.",
            )
        ],
    )


def ensure_missed_run_automations() -> list[str]:
    """One missed-run automation per deployment with an active cron schedule, when the webhook block
    exists. Returns the deployments covered."""
    from prefect.blocks.core import Block
    from prefect.exceptions import ObjectNotFound

    try:
        block = Block.load(f"custom-webhook/{NOTIFY_BLOCK}")
    except (ValueError, ObjectNotFound):
        return []
    covered = []
    for declaration in load().deployments:
        crons = [s for s in declaration.schedules if s.active]
        if not crons:
            continue
        within = max(expected_window(s.cron, s.timezone) for s in crons)
        upsert_automation(missed_run_automation(declaration.name, within, block._block_document_id))
        covered.append(f"{declaration.name} ({within})")
    return covered


def upsert_automation(automation) -> str:  # noqa: ANN001 - prefect.automations.Automation
    """Create the automation, or update the one of the same name in place. Returns its id."""
    from prefect.automations import Automation
    from prefect.exceptions import ObjectNotFound

    try:
        existing = Automation.read(name=automation.name)
    except (ValueError, ObjectNotFound):
        existing = None
    if existing:
        automation.id = existing.id
        automation.update()
        return str(existing.id)
    return str(automation.create().id)


def setup() -> dict[str, list[str] | str | None]:
    return {
        "blocks": bootstrap(),
        "work_pools": ensure_work_pools(),
        "concurrency_limits": ensure_concurrency_limits(),
        "automation": ensure_failure_automation(),
        "missed_run_automations": ensure_missed_run_automations(),
    }


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__).parse_args(argv)
    result = setup()
    for key, value in result.items():
        print(f"{key}: {value if not isinstance(value, list) else ', '.join(value) or '-'}")  # noqa: T201 - a command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
