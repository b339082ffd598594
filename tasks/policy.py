"""Plan policies (infra/policies, docs/policies.md) between a plan and its apply.

`validate_policies(stack)` checks stacks.toml and the stack's rules before any process starts (apply-stack
at its start, ami-rollout before its bake): InvalidInput when malformed. `policy_gate(summary)` runs the
stack's rules over the kept plan's `show -json`, publishes the table artifact `policy-<stack slug>`
(rule, level, message) and returns the report; a deny discards the plan (its workspace is deleted: nothing
of it can be stored or applied) and raises PolicyDenied naming the rules. A warning is the caller's to act
on: apply-stack then asks for approval even when the run's approval mode is auto.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tools import policy
from tools import terraform as tf
from tools.errors import PolicyDenied
from tools.policy import PolicyReport
from tools.process import default_logger
from tools.terraform import PlanSummary

__all__ = ["PolicyReport", "has_policies", "policy_gate", "validate_policies"]


def has_policies(stack: str) -> bool:
    """Whether stacks.toml selects rules for `stack` (InvalidInput when the file is malformed)."""
    return policy.has_policies(stack)


def validate_policies(stack: str) -> None:
    """stacks.toml and the stack's rules load and take their options, or InvalidInput."""
    selected = policy.selection(stack)
    if selected:
        default_logger().info("policies of %s: %s", stack, ", ".join(selected))


@task(name="policy-gate", cache_policy=NO_CACHE, task_run_name="policies {summary.stack}")
def policy_gate(summary: PlanSummary) -> PolicyReport | None:
    """Evaluate the stack's rules over the plan kept in `summary.workspace`; None when it has no rules.
    Deny: the plan is discarded and PolicyDenied raised. Never retried: it runs no process."""
    if summary.workspace is None:
        raise ValueError("policy_gate needs a summary from plan_stack(keep_plan=True)")
    if not policy.has_policies(summary.stack):
        return None
    report = policy.evaluate(summary.stack, tf.plan_json(summary.workspace))
    create_table_artifact(
        key=f"policy-{tf.slug(summary.stack)}",
        table=report.rows(),
        description=f"policy checks of the plan of {summary.stack}: {report.level.value}",
    )
    log = default_logger()
    for result in report.results:
        if result.level is not policy.Level.passed:
            log.warning("policy %s: %s: %s", result.rule, result.level.value, result.message)
    if report.denied:
        tf.remove_workspace(summary.workspace)
        denials = [(r.rule, r.message) for r in report.denied]
        raise PolicyDenied(
            f"policy denied the plan of {summary.stack}, nothing applied: "
            + "; ".join(f"{rule}: {message}" for rule, message in denials),
            denials=denials,
            hint="change the stack or its variables, or the rule's options in infra/policies/stacks.toml",
        )
    log.info("policies of %s: %s", summary.stack, report.level.value)
    return report
