"""When apply-stack may plan and apply in one process, and why not (tasks/terraform_direct.py), over the
real stacks and policy selection (infra/terraform, infra/policies/stacks.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.terraform_direct import direct_refusal
from tools import terraform as tf

DIRECT = "sandbox/direct"  # no policies, no sensitive output
XWIKI = "scalac/internal-prod/xwiki"  # policies


def test_a_stack_nobody_must_see_the_plan_of_is_applied_in_one_process() -> None:
    assert direct_refusal(DIRECT, approval_required=False) is None
    assert direct_refusal("sandbox/smoke", approval_required=False, restore={}, traces=[]) is None


@pytest.mark.parametrize(
    ("stack", "kwargs", "why"),
    [
        (DIRECT, {"approval_required": True}, "approval is required: a person sees the plan"),
        (XWIKI, {"approval_required": False}, "the stack has policies"),
        ("sandbox/policy", {"approval_required": False}, "the stack has policies"),
        (DIRECT, {"approval_required": False, "destroy": True}, "a destroy"),
        (
            DIRECT,
            {"approval_required": False, "restore": {"description": "aws_security_group.direct.description"}},
            "a rollback restore is armed",
        ),
        (
            DIRECT,
            {"approval_required": False, "traces": ["its holder record is left next to the lock"]},
            "a dead run left traces (its holder record is left next to the lock): objects to adopt",
        ),
    ],
    ids=["approval", "policies", "policies-sandbox", "destroy", "restore", "dead-run"],
)
def test_the_saved_plan_path_stays_when_the_plan_must_be_seen_or_is_needed(stack, kwargs, why) -> None:
    refused = direct_refusal(stack, **kwargs)
    assert refused is not None and refused.startswith(why), refused


def test_approval_is_the_first_reason_given() -> None:
    refused = direct_refusal(XWIKI, approval_required=True, destroy=True, traces=["x"])
    assert refused is not None and refused.startswith("approval is required"), refused


def test_sensitive_outputs_are_read_from_the_stack(tmp_path: Path) -> None:
    (tmp_path / "outputs.tf").write_text(
        'output "plain" {\n  value = { a = "b" }\n}\n\n'
        'output "token" {\n  value     = var.token\n  sensitive = true\n}\n\n'
        'output "not_sensitive" {\n  value     = 1\n  sensitive = false\n}\n'
    )
    assert tf.sensitive_outputs(tmp_path) == ["token"]
    assert tf.sensitive_outputs(tf.resolve_stack(DIRECT)) == []
