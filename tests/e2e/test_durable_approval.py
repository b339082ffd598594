"""Durable approval of a served apply-stack (a real runner, the real server, real Terraform against moto):
the run suspends with its plan stored next to the state and no process left; a new runner finishes it
after the answer; a plan gone stale is planned and asked again; no answer in time applies nothing; a
rejection applies nothing; the approver is in the artifact and the audit trail."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from blocks import AWS_BLOCK, TerraformBackend
from flows.apply import StackRequest, apply_stack
from tests.audit_events import audit_events
from tests.reliability.helpers import wait_for
from tests.served import served
from tests.sshd import flow_run_artifacts

pytestmark = pytest.mark.e2e
SMOKE = "sandbox/smoke"
APPLY = "flows.apply:apply_stack"


def _state(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _suspended(run_id, other_than: str | None = None, seconds: float = 240) -> str:
    """Wait until the run is Suspended (on another pause key than `other_than`); its pause key."""

    def check() -> bool:
        state = _state(run_id)
        assert not state.is_final(), f"the run ended: {state}"
        return state.name == "Suspended" and state.state_details.pause_key != other_than

    wait_for(check, seconds, "the run to suspend for approval", interval=0.5)
    return _state(run_id).state_details.pause_key


def _final(run_id, seconds: float = 300):
    wait_for(lambda: _state(run_id).is_final(), seconds, "the run to end", interval=0.5)
    return _state(run_id)


class _Receiver(BaseHTTPRequestHandler):
    """The alerts webhook: records what it is sent."""

    received: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.received.append(json.loads(body or b"{}").get("text", ""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def alerts() -> Iterator[str]:
    """A notification block posting to a local receiver; yields its name."""
    from blocks import slack_webhook

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"approval-alerts-{uuid.uuid4().hex[:8]}"
    slack_webhook(f"http://127.0.0.1:{server.server_port}/hook").save(name, overwrite=True)
    yield name
    server.shutdown()


def _start(
    deployment: str,
    backend_block: str,
    name: str,
    description: str,
    timeout: int = 600,
    alerts: str | None = None,
):
    from prefect.deployments import run_deployment

    request = StackRequest(
        stack=SMOKE,
        variables={"name": name, "description": description},
        approval="required",
        approval_timeout_seconds=timeout,
        notify_block=alerts,
    )
    parameters = {"request": request.model_dump(mode="json"), "backend_block": backend_block}
    return run_deployment(deployment, parameters=parameters, timeout=0)


def _processes_of(run_id) -> list[int]:
    """Processes whose environment names the flow run (what a runner gives the run's process)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _descriptions(ec2, name: str) -> list[str]:
    return [
        g["Description"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == name
    ]


def test_approval_survives_the_runner_replans_when_stale_and_times_out_safely(
    backend_block, ec2, sandbox_env, workdir: Path, alerts: str
) -> None:
    name = f"durable-{uuid.uuid4().hex[:8]}"
    backend = TerraformBackend.load(backend_block)
    s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    pending_prefix = f"{backend.key_prefix}{SMOKE}/pending/"
    log = workdir / "served.log"
    started = datetime.now(UTC)

    def pending() -> dict[str, dict]:
        listed = s3.list_objects_v2(Bucket=backend.bucket, Prefix=pending_prefix).get("Contents") or []
        return {
            item["Key"].rsplit("/", 1)[1]: json.loads(
                s3.get_object(Bucket=backend.bucket, Key=item["Key"])["Body"].read()
            )
            for item in listed
            if item["Key"].endswith(".json")
        }

    try:
        # 1. the run suspends: its plan waits in S3 with checksum and state serial; then the runner's
        # host is lost (SIGKILL)
        with served(APPLY, f"durable-{name}", log, lost=True) as deployment:
            first = _start(deployment, backend_block, name, "v1", alerts=alerts)
            _suspended(first.id)
            notices = [t for t in _Receiver.received if str(first.id) in t]
            assert notices and "approval needed for sandbox/smoke" in notices[0], _Receiver.received
            assert "1 to add" in notices[0] and "create aws_security_group.smoke" in notices[0], notices[0]
            record = pending()[f"{first.id}.json"]
            assert len(record["checksum"]) == 64 and record["serial"] is None  # no state yet
            assert record["summary"]["add"] == 1 and record["variables"]["description"] == "v1"
            # the suspended run's process exits on its own: nothing is held while the plan waits
            wait_for(lambda: not _processes_of(first.id), 60, "the suspended run's process to exit")
        assert _state(first.id).name == "Suspended"
        assert _descriptions(ec2, name) == []

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(first.id, run_input={"approved": True, "approver": "Ada", "reason": "looks right"})
        with served(APPLY, f"durable-{name}", log):  # a new runner picks the resumed run up
            assert _final(first.id).is_completed(), _state(first.id)
            assert _descriptions(ec2, name) == ["v1"]
            assert f"{first.id}.json" not in pending()
            plans = [str(a.data) for a in flow_run_artifacts(first.id) if a.key == "plan-sandbox-smoke"]
            assert any("**approved** by Ada: looks right" in text for text in plans), plans

            # 2. the state moves while a plan waits: the approved plan is not applied, the stack is
            # planned again and the run asks again; approved again, its own plan is applied
            second = _start(deployment, backend_block, name, "v2")
            key = _suspended(second.id)
            serial = pending()[f"{second.id}.json"]["serial"]
            moved = StackRequest(stack=SMOKE, variables={"name": name, "description": "v3"})
            assert apply_stack(moved, backend_block, AWS_BLOCK).applied
            assert _descriptions(ec2, name) == ["v3"]
            resume_flow_run(second.id, run_input={"approved": True, "approver": "Ada"})
            _suspended(second.id, other_than=key)
            assert pending()[f"{second.id}.json"]["serial"] > serial  # planned against the moved state
            assert _descriptions(ec2, name) == ["v3"]  # nothing applied from the stale plan
            resume_flow_run(second.id, run_input={"approved": True, "approver": "Grace"})
            assert _final(second.id).is_completed(), _state(second.id)
            assert _descriptions(ec2, name) == ["v2"]

            # 3. no answer within the timeout: the server refuses the late resume, nothing is applied
            third = _start(deployment, backend_block, name, "v4", timeout=2)
            _suspended(third.id)
            expires = _state(third.id).state_details.pause_timeout
            time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1)
            # the server refuses it: rejected by the orchestration rule, or aborted when its pause-expiry
            # service has failed the run first (prefect's `resume_flow_run` helper returns silently on
            # an abort, so the answer is read from the client)
            with get_client(sync_client=True) as client:
                late = client.resume_flow_run(third.id, run_input={"approved": True, "approver": "Late"})
            assert late.status in (SetStateStatus.REJECT, SetStateStatus.ABORT), late
            state = _final(third.id, 60)
            assert state.is_failed() and "never resumed" in (state.message or ""), state
            assert _descriptions(ec2, name) == ["v2"]

            # 4. rejected: nothing applied; the timed-out run's expired plan is swept by this run
            fourth = _start(deployment, backend_block, name, "v5")
            _suspended(fourth.id)
            assert f"{third.id}.json" not in pending()  # expired: swept by the next run of the stack
            resume_flow_run(
                fourth.id, run_input={"approved": False, "approver": "Ada", "reason": "not today"}
            )
            assert _final(fourth.id).is_completed(), _state(fourth.id)
            assert _descriptions(ec2, name) == ["v2"]
            assert pending() == {}, pending()

        decisions = audit_events(f"devops.stack.{SMOKE}", started, {"devops.stack.rejected"})
        mine = [e for e in decisions if e["event"] in ("devops.stack.approved", "devops.stack.rejected")]
        by_run = {(e["payload"].get("run_id"), e["event"], e["payload"]["approver"]) for e in mine}
        assert (str(first.id), "devops.stack.approved", "Ada") in by_run, by_run
        assert (str(second.id), "devops.stack.approved", "Grace") in by_run, by_run
        assert (str(fourth.id), "devops.stack.rejected", "Ada") in by_run, by_run
    finally:
        for group in ec2.describe_security_groups()["SecurityGroups"]:
            if group["GroupName"] == name:
                ec2.delete_security_group(GroupId=group["GroupId"])
        for item in (
            s3.list_objects_v2(Bucket=backend.bucket, Prefix=backend.key_prefix).get("Contents") or []
        ):
            s3.delete_object(Bucket=backend.bucket, Key=item["Key"])
