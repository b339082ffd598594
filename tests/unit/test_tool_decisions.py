"""What the wrappers decide from a tool's answer, through the runner's seam (tools/process_fake.py): no
process starts, the recorded output goes through the same sink, line handler and error mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import packer
from tools import terraform as tf
from tools.errors import BakeFailed, StateLocked, TerraformError
from tools.process_fake import Answer, scripted
from tools.terraform import Workspace


@pytest.fixture
def runner(tmp_path: Path) -> tf.Runner:
    workspace = Workspace(stack="sandbox/smoke", root=str(tmp_path), path=str(tmp_path), state_key="k")
    return tf.Runner(workspace)


def test_plan_exit_codes_decide_changes(runner: tf.Runner) -> None:
    with scripted(Answer(("terraform", "plan"), exit_code=2)) as calls:
        assert tf.plan(runner) is True
    assert "-detailed-exitcode" in calls[0] and f"-out={tf.PLAN_FILE}" in calls[0]
    with scripted(Answer(("terraform", "plan"), exit_code=0)):
        assert tf.plan(runner, lock=False) is False


def test_a_failed_plan_leads_with_terraforms_own_error(runner: tf.Runner) -> None:
    stderr = ["", "Error: Invalid value for variable", "", "  on devops.tfvars.json line 1:", "  1: {"]
    with scripted(Answer(("terraform", "plan"), exit_code=1, stdout=["Refreshing state..."], stderr=stderr)):
        with pytest.raises(TerraformError) as caught:
            tf.plan(runner)
    assert str(caught.value).startswith("Error: Invalid value for variable"), str(caught.value)
    assert caught.value.exit_code == 1 and "Refreshing state..." in caught.value.tail


def test_a_locked_state_is_state_locked_naming_its_holder(runner: tf.Runner) -> None:
    stderr = [
        "Error: Error acquiring the state lock",
        "Lock Info:",
        "  ID:        8a1b-2c",
        "  Operation: OperationTypeApply",
        "  Who:       root@worker-2",
        "  Created:   2026-12-07 03:00:00",
    ]
    with scripted(Answer(("terraform", "apply"), exit_code=1, stderr=stderr)):
        with pytest.raises(StateLocked) as caught:
            tf.apply(runner)
    assert "root@worker-2" in str(caught.value) and "force-unlock 8a1b-2c" in (caught.value.hint or "")


def test_a_throttled_call_is_transient_a_bad_config_is_not(runner: tf.Runner) -> None:
    with scripted(
        Answer(("terraform", "plan"), exit_code=1, stderr=["Error: RequestLimitExceeded: slow down"])
    ):
        with pytest.raises(TerraformError) as throttled:
            tf.plan(runner)
    with scripted(Answer(("terraform", "plan"), exit_code=1, stderr=["Error: Unsupported argument"])):
        with pytest.raises(TerraformError) as invalid:
            tf.plan(runner)
    assert throttled.value.transient and not invalid.value.transient


def test_show_json_becomes_the_plan_summary(runner: tf.Runner) -> None:
    shown = {
        "resource_changes": [
            {
                "address": "aws_launch_template.lt",
                "type": "aws_launch_template",
                "change": {
                    "actions": ["update"],
                    "before": {"image_id": "ami-1"},
                    "after": {"image_id": "ami-2"},
                },
            },
            {
                "address": "aws_security_group.sg",
                "type": "aws_security_group",
                "change": {"actions": ["no-op"]},
            },
        ],
        "output_changes": {"image": {"actions": ["update"]}},
    }
    with scripted(Answer(("terraform", "show"), stdout=[json.dumps(shown)])):
        summary = tf.summarize_plan("sandbox/smoke", tf.show_plan(runner))
    assert summary.has_changes and (summary.add, summary.change, summary.destroy) == (0, 1, 0)
    assert [r.address for r in summary.resources] == ["aws_launch_template.lt"]
    assert not summary.refresh_only


def test_packer_machine_output_gives_the_artifact_or_a_bake_failure(tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text('{"builders": []}')
    lines = [
        "1700000000,,ui,say,==> amazon-ebs: Creating temporary security group",
        "1700000001,amazon-ebs,artifact,0,id,eu-central-1:ami-0123456789abcdef0",
    ]
    ui: list[str] = []
    with scripted(Answer(("packer", "build"), stdout=lines)):
        out = packer.build({"communicator": "none"}, template, base=tmp_path, on_ui=ui.append)
    assert [(a.region, a.ami_ids) for a in out.artifacts] == [("eu-central-1", ["ami-0123456789abcdef0"])]
    assert ui == ["==> amazon-ebs: Creating temporary security group"]
    error = "1700000002,,ui,error,Build 'amazon-ebs' errored: UnauthorizedOperation"
    with scripted(Answer(("packer", "build"), exit_code=1, stdout=[error])):
        with pytest.raises(BakeFailed, match="UnauthorizedOperation"):
            packer.build({"communicator": "none"}, template, base=tmp_path)
