"""PlanSummary from recorded `terraform show -json` shapes; lock error parsing."""

from __future__ import annotations

from tools import terraform as tf

SHOW = {
    "resource_changes": [
        {
            "address": "aws_launch_template.xwiki-lt",
            "type": "aws_launch_template",
            "change": {
                "actions": ["update"],
                "before": {"image_id": "ami-1", "name": "lt"},
                "after": {"image_id": "ami-2", "name": "lt"},
                "after_unknown": {"latest_version": True},
            },
        },
        {"address": "data.aws_vpc.default", "change": {"actions": ["read"]}},
        {
            "address": "aws_security_group.x",
            "change": {"actions": ["delete", "create"], "before": {"d": "a"}, "after": {"d": "b"}},
        },
    ]
}


def test_summary_counts_and_changed_attributes():
    s = tf.summarize_plan("scalac/internal-prod/xwiki", SHOW)
    assert (s.has_changes, s.add, s.change, s.destroy) == (True, 1, 1, 1)
    lt = s.resource("aws_launch_template.xwiki-lt")
    known = [(c.name, c.old, c.new) for c in lt.changed if not c.known_after_apply]
    assert known == [("image_id", "ami-1", "ami-2")]
    md = s.markdown()
    assert "`image_id`: `ami-1` -> `ami-2`" in md and "| replace |" in md


def test_no_changes():
    s = tf.summarize_plan("x", {"resource_changes": []})
    assert not s.has_changes and "No changes" in s.markdown()


def test_lock_info_is_parsed():
    tail = [
        "Error: Error acquiring the state lock",
        "",
        "Lock Info:",
        "  ID:        8a1b-2c",
        "  Path: b/k",
        "  Operation: OperationTypeApply",
        "  Who:       root@host",
        "  Created:   2026-01-01",
    ]
    info = tf.parse_lock_info(tail)
    assert info.id == "8a1b-2c" and info.who == "root@host" and info.operation == "OperationTypeApply"
    assert tf.parse_lock_info(["Error: something else"]) is None


def test_lock_object_from_s3_is_parsed():
    raw = (
        '{"ID":"6f1c-9a","Operation":"OperationTypeApply","Info":"","Who":"root@vm",'
        '"Version":"1.11.4","Created":"2026-12-01T18:00:00Z","Path":"b/k"}'
    )
    lock = tf.lock_from_json(raw)
    assert (lock.id, lock.who, lock.operation) == ("6f1c-9a", "root@vm", "OperationTypeApply")
    assert tf.lock_from_json("not json") is None and tf.lock_from_json("[1]") is None


def test_a_lock_of_another_user_or_host_is_never_stale():
    lock = tf.LockInfo(id="1", who="someone@elsewhere")
    assert tf.stale_lock_reason(lock, "no/such/stack-for-test", "k") is None
    assert tf.stale_lock_reason(tf.LockInfo(id="", who=tf.this_holder()), "no/such/stack", "k") is None
    mine = tf.LockInfo(id="1", who=tf.this_holder())
    assert "holder is dead" in tf.stale_lock_reason(mine, "no/such/stack-for-test", "k")


def test_fingerprint_follows_files_variables_and_context(tmp_path):
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "main.tf").write_text('variable "x" {}\n')
    (tmp_path / "stack" / ".terraform").mkdir()
    base = tf.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path)
    assert base == tf.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path)
    (tmp_path / "stack" / ".terraform" / "junk").write_text("providers, not config")
    (tmp_path / "stack" / "terraform.tfstate").write_text("{}")
    assert tf.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path) == base
    assert tf.stack_fingerprint("stack", {"x": "2"}, {"key": "k"}, base=tmp_path) != base
    assert tf.stack_fingerprint("stack", {"x": "1"}, {"key": "other"}, base=tmp_path) != base
    (tmp_path / "stack" / "main.tf").write_text('variable "x" { default = "1" }\n')
    assert tf.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path) != base


def test_converged_needs_the_same_fingerprint_and_the_same_state():
    head = tf.state_head(b'{"version": 4, "lineage": "L", "serial": 7, "outputs": {"id": {"value": "sg-1"}}}')
    assert head is not None and head.outputs["id"].value == "sg-1"
    record = tf.ConvergedRecord(fingerprint="f", lineage="L", serial=7)
    assert tf.is_converged(record, "f", head)
    assert not tf.is_converged(record, "g", head)  # other inputs
    assert not tf.is_converged(record.model_copy(update={"serial": 6}), "f", head)  # state written since
    assert not tf.is_converged(record.model_copy(update={"lineage": "M"}), "f", head)  # another state
    assert not tf.is_converged(None, "f", head) and not tf.is_converged(record, "f", None)
    assert tf.state_head(b"not json") is None and tf.state_head(b"{}") is None and tf.state_head(None) is None


def test_an_init_in_progress_is_known_by_the_key_on_its_command_line(tmp_path):
    """A terraform process not initialised yet (no .terraform/terraform.tfstate) is matched to a state by
    the `-backend-config=key=...` of its `init`; without one it counts for every state of the stack."""
    stack_dir = tmp_path / "ws" / "terraform" / "x" / "stack"
    stack_dir.mkdir(parents=True)
    proc = tmp_path / "proc"
    for pid, argv in (
        (101, ["terraform", "init", "-backend-config=key=tests/a/x/stack.tfstate"]),
        (102, ["terraform", "plan"]),
    ):
        entry = proc / str(pid)
        entry.mkdir(parents=True)
        (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (entry / "stat").write_text(f"{pid} (terraform) S 1 1")
        (entry / "cwd").symlink_to(stack_dir)
    found = {p.pid: p.state_key for p in tf.live_terraform_processes("x/stack", proc=proc)}
    assert found == {101: "tests/a/x/stack.tfstate", 102: None}
