"""detect-drift against a real SSH host: a manual edit is reported (artifact + webhook) and undone."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from blocks import slack_webhook
from flows.detect_drift import DriftFound, DriftReport, detect_drift
from flows.refresh import AnsibleTarget, refresh_servers
from tests.sshd import SshServer, client_key, flow_run_artifacts, ssh_host_line

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver():
    """A tiny local webhook receiver: yields (url, received bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def test_manual_change_is_reported_then_undone(blocks, workdir: Path, receiver) -> None:
    url, received = receiver
    block = f"drift-hook-{uuid.uuid4().hex[:8]}"
    slack_webhook(url).save(block, overwrite=True)
    key = client_key(workdir)
    server = SshServer(workdir / "sshd").start(key)
    try:
        inventory = workdir / "inventory.ini"
        inventory.write_text(
            "[internal]\n"
            + ssh_host_line("web1", server.port, key, workdir / "known_hosts", workdir / "web1")
            + "\n"
        )
        target = AnsibleTarget(inventory=str(inventory))
        refresh_servers(target=target)
        clean = detect_drift(servers=target, notify_block=block)
        assert not clean.has_drift and received == []

        managed = workdir / "web1" / "etc/ssh/sshd_config.d/10-devops.conf"
        managed.write_text(
            managed.read_text().replace("PasswordAuthentication no", "PasswordAuthentication yes")
        )

        state = detect_drift(servers=target, notify_block=block, return_state=True)
        assert state.is_failed()
        with pytest.raises(DriftFound, match="web1"):
            state.result()
        [report] = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.key == "drift-report"]
        assert "web1" in report.data and "Harden sshd" in report.data
        assert "-PasswordAuthentication yes" in report.data and "+PasswordAuthentication no" in report.data
        assert "PasswordAuthentication yes" in managed.read_text()  # check mode changed nothing
        [note] = received
        assert "drift detected" in note["text"] and "web1" in note["text"] and "Harden sshd" in note["text"]

        report_only = detect_drift(servers=target, notify_block=None, fail_on_drift=False)
        assert isinstance(report_only, DriftReport) and [h.host for h in report_only.drifted_hosts] == [
            "web1"
        ]

        healed = refresh_servers(target=target)
        assert "Harden sshd" in [c.task for c in healed.changes if c.host == "web1"]
        assert "PasswordAuthentication no" in managed.read_text()
        assert not detect_drift(servers=target, notify_block=block).has_drift
        assert len(received) == 1
    finally:
        server.stop()
