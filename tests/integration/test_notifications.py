"""A failed deployment run posts a Slack-compatible notification (flow, deployment, failing step, UI link)
to the webhook block, through the automation deployments.setup creates. Real server, real HTTP receiver."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.integration.flows_for_tests import served_run


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> str:
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_failed_deployment_run_notifies_the_webhook(prefect_server: str, receiver: str) -> None:

    from blocks import NOTIFY_BLOCK, slack_webhook
    from deployments.setup import AUTOMATION_NAME, ensure_failure_automation

    slack_webhook(receiver).save(NOTIFY_BLOCK, overwrite=True)
    first = ensure_failure_automation()
    assert first and ensure_failure_automation() == first  # idempotent: updated, not duplicated
    from prefect.automations import Automation

    assert Automation.read(name=AUTOMATION_NAME).id is not None

    with served_run("always-fails", mode="fails") as run:
        end = time.monotonic() + 120
        while time.monotonic() < end and not any(str(run.id) in m.get("text", "") for m in Receiver.received):
            time.sleep(0.5)
        texts = [m["text"] for m in Receiver.received if str(run.id) in m.get("text", "")]
        assert texts, f"no notification arrived: {Receiver.received}"
        text = texts[0]
        assert "always-fails" in text and "always-fails-" in text and "Failed" in text
        assert "packer build failed" in text  # the failing step, from the state message
        assert f"/runs/flow-run/{run.id}" in text


def test_a_scheduled_deployment_without_a_completed_run_in_its_window_alerts(
    prefect_server: str, receiver: str
) -> None:
    """The missed-run automation is proactive: it fires on the absence of a Completed run, so a dead
    scheduler or worker (here: a deployment that never runs) alerts too. A 10 s window stands for the
    schedule's; setup() derives the real ones from the crons of prefect.yaml."""
    import uuid
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.blocks.core import Block

    from blocks import NOTIFY_BLOCK, slack_webhook
    from deployments.setup import MISSED_RUN_PREFIX, missed_run_automation, upsert_automation

    slack_webhook(receiver).save(NOTIFY_BLOCK, overwrite=True)
    block_id = Block.load(f"custom-webhook/{NOTIFY_BLOCK}")._block_document_id
    name = f"never-runs-{uuid.uuid4().hex[:8]}"
    automation_id = upsert_automation(missed_run_automation(name, timedelta(seconds=10), block_id))
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not any(name in m.get("text", "") for m in Receiver.received):
            time.sleep(0.5)
        texts = [m["text"] for m in Receiver.received if name in m.get("text", "")]
        assert texts, f"no missed-run alert arrived: {Receiver.received}"
        assert "missed its run" in texts[0] and "completed within 0:00:10" in texts[0]
    finally:
        Automation.read(id=automation_id).delete()
    with pytest.raises(ValueError, match="not found"):
        Automation.read(name=f"{MISSED_RUN_PREFIX}{name}")


def test_setup_covers_every_scheduled_deployment_with_its_window(prefect_server: str, receiver: str) -> None:
    from prefect.automations import Automation

    from blocks import NOTIFY_BLOCK, slack_webhook
    from deployments.setup import MISSED_RUN_PREFIX, ensure_missed_run_automations

    slack_webhook(receiver).save(NOTIFY_BLOCK, overwrite=True)
    covered = ensure_missed_run_automations()
    assert "devops-packer-xwiki (3:00:00)" in covered and "detect-drift (1 day, 12:00:00)" in covered
    assert ensure_missed_run_automations() == covered  # idempotent
    automation = Automation.read(name=f"{MISSED_RUN_PREFIX}devops-packer-xwiki")
    assert automation.trigger.within.total_seconds() == 3 * 3600
