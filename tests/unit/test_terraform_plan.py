"""PlanSummary from recorded `terraform show -json` shapes; lock error parsing; the converged record and
its check of state facts against AWS facts."""

from __future__ import annotations

from tools import terraform as tf
from tools import terraform_converged as conv
from tools.aws import AutoScalingGroupFacts, LaunchTemplateFacts

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


# Recorded from Terraform 1.11 + AWS provider 5.100 against moto (xwiki stack), trimmed: right after an
# apply the provider reads empty collections back as [] where the state had null (noise), and a launch
# template version created outside Terraform moves latest_version (drift, and an output follows it).
NOISE = [
    {
        "address": "aws_autoscaling_group.xwiki",
        "type": "aws_autoscaling_group",
        "change": {
            "actions": ["update"],
            "before": {"name": "x", "enabled_metrics": None, "suspended_processes": None, "tag": []},
            "after": {"name": "x", "enabled_metrics": [], "suspended_processes": [], "tag": []},
            "after_unknown": {},
        },
    },
    {
        "address": "aws_launch_template.xwiki-lt",
        "type": "aws_launch_template",
        "change": {
            "actions": ["update"],
            "before": {"latest_version": 1, "tags": None, "network_interfaces": [{"ipv4_addresses": None}]},
            "after": {"latest_version": 1, "tags": {}, "network_interfaces": [{"ipv4_addresses": []}]},
            "after_unknown": {},
        },
    },
]
NO_OP = [
    {"address": "aws_launch_template.xwiki-lt", "change": {"actions": ["no-op"]}},
    {"address": "aws_autoscaling_group.xwiki", "change": {"actions": ["no-op"]}},
]
UNCHANGED_OUTPUT = {"launch_template_latest_version": {"actions": ["no-op"], "before": 1, "after": 1}}


def test_noise_in_resource_drift_is_no_change():
    """An unchanged stack still says "no changes" although Terraform lists null -> [] as drift."""
    s = tf.summarize_plan(
        "x", {"resource_drift": NOISE, "resource_changes": NO_OP, "output_changes": UNCHANGED_OUTPUT}
    )
    assert not s.has_changes and s.drift == 0 and not s.drifted and "No changes" in s.markdown()


def test_drift_alone_is_a_change_applied_refresh_only():
    moved = {
        "address": "aws_launch_template.xwiki-lt",
        "type": "aws_launch_template",
        "change": {
            "actions": ["update"],
            "before": {"latest_version": 1, "default_version": 1, "tags": None, "image_id": "ami-1"},
            "after": {"latest_version": 3, "default_version": 1, "tags": {}, "image_id": "ami-1"},
        },
    }
    s = tf.summarize_plan("x", {"resource_drift": [NOISE[0], moved], "resource_changes": NO_OP})
    assert s.has_changes and s.drift == 1 and s.refresh_only and (s.add, s.change, s.destroy) == (0, 0, 0)
    [drifted] = s.drifted
    assert [(c.name, c.old, c.new) for c in drifted.changed] == [("latest_version", 1, 3)]
    md = s.markdown()
    assert "1 changed outside Terraform" in md and "Changed outside Terraform (drift)" in md
    assert "`latest_version`: `1` -> `3`" in md and "-refresh-only" in md
    # drift next to a resource change: counted apart, the plan is a normal one (approval, saved plan)
    both = tf.summarize_plan("x", {"resource_drift": [moved], **SHOW})
    assert both.drift == 1 and both.change == 1 and not both.refresh_only


def test_an_output_only_change_is_a_change():
    outputs = {"url": {"actions": ["update"], "before": "a", "after": "b"}, **UNCHANGED_OUTPUT}
    s = tf.summarize_plan("x", {"resource_changes": NO_OP, "output_changes": outputs})
    assert s.has_changes and s.refresh_only and s.output_changes == {"url": "update"}
    assert "1 output(s) to update" in s.markdown() and "`url` (update)" in s.markdown()
    created = tf.summarize_plan("x", {"output_changes": {"new": {"actions": ["create"], "after": 1}}})
    assert created.has_changes and created.output_changes == {"new": "create"}


def test_a_failed_plan_leads_with_terraforms_error_lines():
    tail = [
        "aws_launch_template.xwiki-lt: Refreshing state... [id=lt-1]",
        "Planning failed. Terraform encountered an error while generating this plan.",
        "",
        "Warning: Deprecated attribute",
        "  ignore me",
        "",
        "Error: Invalid value for input variable",
        "",
        "  on variables.tf line 52:",
        "Unsuitable value for var.root_volume_size: a number is required.",
        "",
        "╷",
        "│ Error: reading EC2 Launch Template (lt-1): couldn't find resource",
        "│ ",
        "╵",
    ]
    assert tf.error_blocks(tail) == [
        "Error: Invalid value for input variable",
        "",
        "on variables.tf line 52:",
        "Unsuitable value for var.root_volume_size: a number is required.",
        "Error: reading EC2 Launch Template (lt-1): couldn't find resource",
    ]
    assert tf.error_blocks(["Plan: 1 to add"]) == []


def test_a_plan_without_the_lock_says_so_on_its_command_line():
    argv = tf.command("plan", input=False, lock=False, out=tf.PLAN_FILE)
    assert "-lock=false" in argv and not any(a.startswith("-lock-timeout") for a in argv)
    refresh = tf.command("apply", input=False, refresh_only=tf.IsFlagged, auto_approve=tf.IsFlagged)
    assert "-refresh-only" in refresh and "-auto-approve" in refresh


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


def test_fingerprint_follows_files_variables_and_context(tmp_path):
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "main.tf").write_text('variable "x" {}\n')
    (tmp_path / "stack" / ".terraform").mkdir()
    base = conv.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path)
    assert base == conv.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path)
    (tmp_path / "stack" / ".terraform" / "junk").write_text("providers, not config")
    (tmp_path / "stack" / "terraform.tfstate").write_text("{}")
    assert conv.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path) == base
    assert conv.stack_fingerprint("stack", {"x": "2"}, {"key": "k"}, base=tmp_path) != base
    assert conv.stack_fingerprint("stack", {"x": "1"}, {"key": "other"}, base=tmp_path) != base
    (tmp_path / "stack" / "main.tf").write_text('variable "x" { default = "1" }\n')
    assert conv.stack_fingerprint("stack", {"x": "1"}, {"key": "k"}, base=tmp_path) != base


def test_converged_needs_the_same_fingerprint_and_the_same_state():
    head = conv.state_head(
        b'{"version": 4, "lineage": "L", "serial": 7, "outputs": {"id": {"value": "sg-1"}}}'
    )
    assert head is not None and head.outputs["id"].value == "sg-1"
    record = conv.ConvergedRecord(fingerprint="f", lineage="L", serial=7, variables={"ami_id": "ami-1"})
    assert conv.ConvergedRecord.model_validate_json(record.model_dump_json()).variables == {"ami_id": "ami-1"}
    old = conv.ConvergedRecord.model_validate_json('{"fingerprint": "f", "lineage": "L", "serial": 7}')
    assert old.variables is None  # written before records kept variables: unknown, not "defaults"
    assert conv.is_converged(record, "f", head)
    assert not conv.is_converged(record, "g", head)  # other inputs
    assert not conv.is_converged(record.model_copy(update={"serial": 6}), "f", head)  # state written since
    assert not conv.is_converged(record.model_copy(update={"lineage": "M"}), "f", head)  # another state
    assert not conv.is_converged(None, "f", head) and not conv.is_converged(record, "f", None)
    assert (
        conv.state_head(b"not json") is None
        and conv.state_head(b"{}") is None
        and conv.state_head(None) is None
    )


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


STATE = {
    "version": 4,
    "lineage": "L",
    "serial": 5,
    "resources": [
        {
            "mode": "managed",
            "type": "aws_launch_template",
            "name": "xwiki-lt",
            "instances": [
                {"attributes": {"id": "lt-1", "latest_version": 2, "default_version": 1, "image_id": "ami-2"}}
            ],
        },
        {
            "mode": "managed",
            "type": "aws_autoscaling_group",
            "name": "xwiki",
            "instances": [
                {"attributes": {"name": "asg", "launch_template": [{"id": "lt-1", "version": "$Latest"}]}}
            ],
        },
        {"mode": "data", "type": "aws_launch_template", "instances": [{"attributes": {"id": "lt-9"}}]},
        {"mode": "managed", "type": "aws_security_group", "instances": [{"attributes": {"id": "sg-1"}}]},
    ],
}


def test_state_facts_are_compared_with_aws_facts():
    import json

    recorded = conv.state_facts(json.dumps(STATE))
    assert recorded.launch_templates == [
        LaunchTemplateFacts(
            launch_template_id="lt-1", latest_version=2, default_version=1, latest_image_id="ami-2"
        )
    ]
    assert recorded.auto_scaling_groups == [
        AutoScalingGroupFacts(name="asg", launch_template_id="lt-1", launch_template_version="$Latest")
    ]
    same = conv.StateFacts.model_validate(recorded.model_dump())
    assert conv.fact_differences(recorded, same) == []

    # the lost state write: AWS made version 3 (with the new image), the state still says 2
    ahead = same.model_copy(deep=True)
    ahead.launch_templates[0].latest_version = 3
    ahead.launch_templates[0].latest_image_id = "ami-3"
    assert conv.fact_differences(recorded, ahead) == [
        "launch template lt-1 latest_version: state 2, AWS 3",
        "launch template lt-1 latest_image_id: state ami-2, AWS ami-3",
    ]
    pinned = same.model_copy(deep=True)
    pinned.auto_scaling_groups[0].launch_template_version = "2"
    assert conv.fact_differences(recorded, pinned) == [
        "auto scaling group asg launch_template_version: state $Latest, AWS 2"
    ]
    gone = conv.StateFacts()
    assert conv.fact_differences(recorded, gone) == [
        "launch template lt-1 is gone from AWS",
        "auto scaling group asg is gone from AWS",
    ]
    assert conv.state_facts(b"not json").empty and conv.state_facts(None).empty
