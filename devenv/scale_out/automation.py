"""Prefect's documented zombie detection for the scale-out's workers: a run whose heartbeats stop is
marked Crashed."""

from __future__ import annotations

HEARTBEAT_SECONDS = 30  # Prefect's minimum flow-run heartbeat interval
ZOMBIE_AUTOMATION = "devops-flows: crash flow runs whose heartbeats stopped"


def ensure_zombie_automation(within_seconds: int = 90) -> str:
    """Prefect's documented zombie detection: a flow run that sent a heartbeat and then, within
    `within_seconds`, neither another heartbeat nor a final state, is set to Crashed (its worker or host
    died). Workers send heartbeats every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (>= 30)."""
    from datetime import timedelta

    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    if within_seconds <= HEARTBEAT_SECONDS:
        raise ValueError(f"within_seconds must exceed the heartbeat interval ({HEARTBEAT_SECONDS}s)")
    automation = Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when its heartbeats stop (the worker or its host died).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message="Flow run marked as crashed: its heartbeats stopped."
            )
        ],
    )
    from deployments.setup import upsert_automation

    return upsert_automation(automation)
