"""The one-process apply's reading of `terraform apply -auto-approve -json`, fed with recordings of real
runs (tests/unit/recorded/apply_*.jsonl: Terraform 1.11.4 against the sandbox's moto, stack sandbox/direct;
`apply_sensitive_output` with a sensitive output added to it) through the runner's seam
(tools/process_fake.py): the same sink, line handler and error mapping as a real run, no process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tools import terraform as tf
from tools.errors import StateLocked, TerraformError
from tools.process_fake import Answer, scripted
from tools.redact import redact
from tools.terraform import ApplyStream, Workspace

RECORDED = Path(__file__).parent / "recorded"
SG = "aws_security_group.direct"


def recorded(case: str) -> list[str]:
    return [line for line in (RECORDED / f"apply_{case}.jsonl").read_text().splitlines() if line]


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test_apply_stream")


@pytest.fixture
def runner(tmp_path: Path, log: logging.Logger) -> tf.Runner:
    workspace = Workspace(stack="sandbox/direct", root=str(tmp_path), path=str(tmp_path), state_key="k")
    return tf.Runner(workspace, logger=log)


def apply(runner: tf.Runner, case: str, exit_code: int = 0) -> tuple[ApplyStream, list[list[str]]]:
    with scripted(Answer(("terraform", "apply"), exit_code=exit_code, stdout=recorded(case))) as calls:
        return tf.apply_direct(runner, lock_timeout=7), calls


def test_a_create_gives_the_plan_and_the_outputs_from_one_process(runner, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="test_apply_stream"):
        stream, calls = apply(runner, "create")
    [argv] = calls  # one process: no show, no output
    assert argv[1] == "apply" and {"-auto-approve", "-json", "-input=false", "-lock-timeout=7s"} <= set(argv)
    assert f"-var-file={tf.VAR_FILE}" in argv and tf.PLAN_FILE not in argv
    summary = stream.summary("sandbox/direct")
    assert summary.has_changes and (summary.add, summary.change, summary.destroy) == (1, 0, 0)
    changes = [(r.address, r.action, r.type) for r in summary.resources]
    assert changes == [(SG, "create", "aws_security_group")]
    assert summary.output_changes == {"security_group_id": "create", "security_group_name": "create"}
    assert stream.apply_counts == {"add": 1, "change": 0, "remove": 0, "import": 0}
    assert stream.outputs["security_group_id"].value.startswith("sg-")
    assert stream.outputs["security_group_name"].value.startswith("rec-direct-")
    markdown = summary.markdown()
    assert "1 to add, 0 to change, 0 to destroy" in markdown and f"`{SG}` | create" in markdown
    logged = [r.getMessage() for r in caplog.records]
    assert "aws_security_group.direct: Plan to create" in logged  # readable, not JSON
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in logged
    assert not any(m.startswith("{") for m in logged), logged


def test_no_change_is_no_change_and_still_gives_the_outputs(runner) -> None:
    stream, _ = apply(runner, "no_change")
    summary = stream.summary("sandbox/direct")
    assert not summary.has_changes and summary.counts() == "no changes" and not summary.resources
    assert stream.outputs["security_group_id"].value.startswith("sg-")


def test_a_replacement_counts_as_add_and_destroy(runner) -> None:
    summary = apply(runner, "replace")[0].summary("sandbox/direct")
    assert [(r.address, r.action) for r in summary.resources] == [(SG, "replace")]
    assert (summary.add, summary.change, summary.destroy) == (1, 0, 1)
    assert summary.output_changes == {"security_group_id": "update"}


def test_drift_is_named_but_not_shown(runner) -> None:
    """The stream says what drifted but carries no values: the summary shows the planned update only."""
    stream, _ = apply(runner, "drift")
    assert stream.drifted == [SG]
    summary = stream.summary("sandbox/direct")
    assert [(r.address, r.action) for r in summary.resources] == [(SG, "update")]
    assert summary.drift == 0 and not summary.drifted


def test_a_sensitive_output_value_is_withheld_by_terraform(runner, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="test_apply_stream"):
        stream, _ = apply(runner, "sensitive_output")
    arn = stream.outputs["security_group_arn"]
    assert arn.sensitive and arn.value is None and arn.type == "string"
    assert "security_group_arn" in stream.summary("sandbox/direct").output_changes


def test_a_sensitive_value_in_the_stream_is_registered_before_it_is_logged(log) -> None:
    secret = "arn:aws:ec2:eu-central-1:123456789012:security-group/sg-0123456789abcdef"
    line = (
        '{"@level":"info","@message":"Outputs: 1","type":"outputs","outputs":'
        f'{{"arn":{{"sensitive":true,"type":"string","value":"{secret}"}}}}}}'
    )
    stream = ApplyStream(log)
    stream("stdout", line)
    assert stream.outputs["arn"].value == secret
    assert secret not in redact(f"seen: {secret}")


def test_a_failed_create_leads_with_terraforms_own_error(runner) -> None:
    with pytest.raises(TerraformError) as caught:
        apply(runner, "error", exit_code=1)
    exc = caught.value
    assert type(exc) is TerraformError and exc.exit_code == 1
    assert str(exc).startswith("Error: creating Security Group"), str(exc)
    assert "InvalidGroup.Duplicate" in exc.message
    assert exc.tail and not any(line.startswith("{") for line in exc.tail), exc.tail  # readable lines
    assert "aws_security_group.direct: Creation errored after 0s" in exc.tail


def test_a_held_lock_is_state_locked_naming_its_holder(runner) -> None:
    with pytest.raises(StateLocked) as caught:
        apply(runner, "locked", exit_code=1)
    exc = caught.value
    assert "root@worker-2" in exc.message and "OperationTypeApply" in exc.message
    assert "force-unlock 5e1f0c2a-1b2c-4d3e-8f90-0a1b2c3d4e5f" in (exc.hint or "")
    assert "Error: Error acquiring the state lock" in exc.tail


def test_a_line_that_is_not_json_is_kept_and_logged(log, caplog) -> None:
    stream = ApplyStream(log)
    with caplog.at_level(logging.INFO, logger="test_apply_stream"):
        stream("stderr", "panic: runtime error")
        stream("stdout", "[1, 2]")
    assert stream.error_lines() == ["panic: runtime error", "[1, 2]"]
    assert [r.getMessage() for r in caplog.records] == ["panic: runtime error", "[1, 2]"]
