"""PlanSummary from recorded `terraform show -json` shapes; lock error parsing."""

from __future__ import annotations

from tools import terraform as tf

SHOW = {
    "resource_changes": [
        {"address": "aws_launch_template.xwiki-lt", "type": "aws_launch_template",
         "change": {"actions": ["update"], "before": {"image_id": "ami-1", "name": "lt"},
                    "after": {"image_id": "ami-2", "name": "lt"}, "after_unknown": {"latest_version": True}}},
        {"address": "data.aws_vpc.default", "change": {"actions": ["read"]}},
        {"address": "aws_security_group.x", "change": {"actions": ["delete", "create"], "before": {"d": "a"},
                                                       "after": {"d": "b"}}},
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
    tail = ["Error: Error acquiring the state lock", "", "Lock Info:", "  ID:        8a1b-2c", "  Path: b/k",
            "  Operation: OperationTypeApply", "  Who:       root@host", "  Created:   2026-01-01"]
    info = tf.parse_lock_info(tail)
    assert info.id == "8a1b-2c" and info.who == "root@host" and info.operation == "OperationTypeApply"
    assert tf.parse_lock_info(["Error: something else"]) is None
