"""The staleness rule of a Terraform state lock (tools/terraform_lock.py) and the host identity it rests
on, as pure decisions: the identity, the liveness of a pid and the live terraform processes are given."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta

from tools import terraform as tf
from tools.identity import INIT_PID_NAMESPACE, HostIdentity, ProcessRef, pid_alive, process_start, this_host

HERE = HostIdentity(boot_id="b-1", hostname="worker", pid_namespace=4026532000, machine_id="m-1")
STARTED = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
LOCK = tf.LockInfo(
    id="6f1c-9a", who="root@worker", operation="OperationTypeApply", created="2026-12-05T12:00:03.5Z"
)


def record(identity: HostIdentity = HERE, pid: int = 4242, started: datetime = STARTED) -> tf.HolderRecord:
    return tf.HolderRecord(
        process=ProcessRef(identity=identity, pid=pid, start=99), flow_run_id="run-1", started=started
    )


def decide(lock=LOCK, rec=None, *, here=HERE, alive=False, writers=()):
    return tf.stale_lock_reason(
        lock,
        rec,
        "x/stack",
        "k",
        here=here,
        writers=lambda: list(writers),
        alive=lambda pid, start: alive,
    )


def test_a_dead_holder_that_shared_our_process_table_makes_the_lock_stale():
    reason = decide(rec=record())
    assert reason and "pid 4242" in reason and "run-1" in reason and "holder is dead" in reason


def test_no_record_another_identity_or_a_live_holder_is_never_stale():
    assert decide(rec=None) is None  # e.g. a terraform run by hand: Who alone proves nothing
    assert decide(rec=record(), alive=True) is None
    other_container = HERE.model_copy(update={"pid_namespace": 4026532999})
    assert decide(rec=record(identity=other_container)) is None  # same host name and boot, other pids
    other_host = HERE.model_copy(update={"hostname": "worker-2"})
    assert decide(rec=record(identity=other_host)) is None
    unknown = HERE.model_copy(update={"boot_id": ""})
    assert decide(rec=record(identity=unknown), here=unknown) is None


def test_a_live_terraform_on_the_state_keeps_the_lock():
    live = tf.TerraformProcess(pid=7, cwd="/tmp/x/stack", argv=["terraform", "apply"], state_key="k")
    assert decide(rec=record(), writers=[live]) is None


def test_a_record_written_after_the_lock_was_taken_does_not_describe_it():
    late = record(started=STARTED + timedelta(minutes=5))
    assert decide(rec=late) is None
    assert decide(LOCK.model_copy(update={"created": "garbage"}), record()) is None
    assert decide(LOCK.model_copy(update={"id": ""}), record()) is None


def test_a_record_of_this_machine_before_a_reboot_is_stale_but_not_of_a_container():
    host = HERE.model_copy(update={"pid_namespace": INIT_PID_NAMESPACE})
    before = host.model_copy(update={"boot_id": "b-0"})
    assert "reboot" in decide(rec=record(identity=before), here=host, alive=True)
    container = HERE.model_copy(update={"boot_id": "b-0"})  # not the initial pid namespace
    assert decide(rec=record(identity=container), alive=True) is None
    clone = before.model_copy(update={"machine_id": "m-2"})
    assert decide(rec=record(identity=clone), here=host) is None


def test_this_host_and_pid_liveness_on_the_real_proc():
    me = this_host()
    assert me.boot_id and me.pid_namespace and me.same_process_table(this_host())
    assert pid_alive(os.getpid(), process_start(os.getpid()))
    assert not pid_alive(os.getpid(), (process_start(os.getpid()) or 0) + 1)  # a reused pid is another
    child = subprocess.Popen(["true"])
    child.wait()
    assert not pid_alive(child.pid)


def test_holder_record_round_trip_and_lock_json():
    raw = record().model_dump_json()
    assert tf.record_from_json(raw) == record()
    assert tf.record_from_json(b"not json") is None and tf.record_from_json(None) is None
    assert tf.holder_key("a/terraform.tfstate") == "a/terraform.tfstate.holder.json"
