"""The alert webhook URL is a secret of the notification block: a send works (Prefect substitutes it), and
a failed send raises NotificationFailed whose message, the task run's state message and the run's logs
hold no URL. Real Prefect server, real HTTP receiver (answers 200 or 500)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prefect import flow

from blocks import slack_webhook
from tasks.notify import notify
from tests.reliability.helpers import logs_of, task_run_states_of
from tools.errors import NotificationFailed


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append((self.path, json.loads(body or b"{}")))
        status = 500 if "fail" in self.path else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"boom" if status == 500 else b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> str:
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@flow(name="notify-secret-check")
def _notify(block: str) -> bool:
    return notify(block, "drift", "drift", "body")


def test_webhook_url_is_a_block_secret_and_never_in_an_error(prefect_server: str, receiver: str) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    token = uuid.uuid4().hex
    ok_url, failing_url = f"{receiver}/hook/ok-{token}", f"{receiver}/hook/fail-{token}"
    slack_webhook(ok_url).save(f"alerts-ok-{token[:8]}", overwrite=True)
    slack_webhook(failing_url).save(f"alerts-fail-{token[:8]}", overwrite=True)

    stored = CustomWebhookNotificationBlock.load(f"alerts-fail-{token[:8]}")
    assert token not in stored.model_dump_json() and stored.url == "{{webhook_url}}"  # obfuscated

    assert _notify(f"alerts-ok-{token[:8]}") is True
    assert any(path == f"/hook/ok-{token}" for path, _ in Receiver.received), Receiver.received

    state = _notify(f"alerts-fail-{token[:8]}", return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, NotificationFailed) and "HTTP 500" in str(exc), repr(exc)
    run_ids = [state.state_details.flow_run_id]
    deadline = time.monotonic() + 60  # logs reach the API in batches: wait for the task's failure record
    while time.monotonic() < deadline and not any("NotificationFailed" in m for m in logs_of(run_ids)):
        time.sleep(0.5)
    assert any("NotificationFailed" in m for m in logs_of(run_ids)), "the failure was never logged"
    places = {
        "error": str(exc),
        "flow state message": state.message or "",
        "task run states": "\n".join(task_run_states_of(run_ids)),
        "logs": "\n".join(logs_of(run_ids)),
    }
    leaked = [where for where, text in places.items() if token in text]
    assert leaked == [], f"the webhook URL leaked into: {leaked}"
