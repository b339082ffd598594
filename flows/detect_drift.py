"""detect-drift: a scheduled check that the servers and the cloud still match their code.

For each configured Terraform stack a plan (never applied) with the variables of its LAST APPLY (kept by
apply-stack in the converged record next to the state), so a rollout's ami_id is not reported as drift; a
stack with no state is reported as "not deployed", not as a failure. The plans run with `-lock=false`:
drift detection must never make an apply fail or wait, and a plan takes no write (it never saves the
state). Instances that do not run the image of the launch template version their auto scaling group uses
(a rollout whose instance refresh did not finish) are drift too. And the refresh playbook in check mode
with diff. Any planned change (resources, outputs, or
objects changed outside Terraform), any host task that would change, is drift. The drift report is a markdown
artifact naming each drifted stack and host and what would change; a notification goes to the webhook
block; the run fails when drift was found (or completes, with `fail_on_drift=False`), so it shows.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from blocks import AWS_BLOCK, NOTIFY_BLOCK, TF_BACKEND_BLOCK, VAULT_BLOCK
from flows.refresh import AnsibleTarget
from tasks.ansible import PlaybookResult, publish_recap, run_playbook
from tasks.instance_refresh import instances_behind
from tasks.logs import default_logger, redact
from tasks.notify import notify
from tasks.task_runner import StoppingThreadPoolTaskRunner
from tasks.terraform import PlanSummary, plan_stack
from tasks.terraform_converged import last_apply

__all__ = ["DriftFound", "DriftReport", "StackCheck", "detect_drift"]


class StackCheck(BaseModel):
    """A Terraform stack to plan (under infra/terraform). It is planned with the variables of its last
    apply-stack run; `variables` only when no record of that apply has them (applied some other way)."""

    stack: str = Field(description="Stack directory under infra/terraform, e.g. 'xwiki'.")
    variables: dict[str, str] = Field(
        default_factory=dict,
        description="Terraform variables for the plan when the last apply's are unknown (non-secret).",
    )


class HostDrift(BaseModel):
    host: str
    tasks: list[str] = Field(default_factory=list)


class DriftReport(BaseModel):
    """What drifted: stacks with planned changes, hosts whose configuration would change."""

    stacks: list[PlanSummary] = Field(default_factory=list)
    not_deployed: list[str] = Field(default_factory=list, description="Stacks with no state (never applied)")
    instances_behind: list[str] = Field(
        default_factory=list, description="Instances not on their group's launch template version"
    )
    servers: PlaybookResult | None = None

    @property
    def drifted_stacks(self) -> list[str]:
        return [s.stack for s in self.stacks if s.has_changes]

    @property
    def drifted_hosts(self) -> list[HostDrift]:
        if self.servers is None:
            return []
        by_host: dict[str, list[str]] = {}
        for change in self.servers.changes:
            by_host.setdefault(change.host, []).append(change.task)
        for host in self.servers.changed_hosts:
            by_host.setdefault(host, [])
        return [HostDrift(host=h, tasks=t) for h, t in sorted(by_host.items())]

    @property
    def has_drift(self) -> bool:
        return bool(self.drifted_stacks or self.drifted_hosts or self.instances_behind)

    def summary(self) -> str:
        if not self.has_drift:
            return "No drift: every stack and server matches its code."
        parts = []
        if self.drifted_stacks:
            parts.append("stacks " + ", ".join(self.drifted_stacks))
        if self.drifted_hosts:
            parts.append("hosts " + ", ".join(h.host for h in self.drifted_hosts))
        if self.instances_behind:
            parts.append(f"{len(self.instances_behind)} instance(s) not on their launch template's image")
        return "Drift found in " + "; ".join(parts)

    def markdown(self) -> str:
        lines = ["# Drift report", "", f"**{self.summary()}**", ""]
        lines += [f"Stack `{s}`: not deployed (no state), nothing to compare." for s in self.not_deployed]
        if self.not_deployed:
            lines.append("")
        for plan in self.stacks:
            lines += [plan.markdown(), ""]
        if self.instances_behind:
            lines += ["# Instances behind their launch template", ""]
            lines += [f"- {line}" for line in self.instances_behind] + [""]
        if self.servers is not None:
            lines += ["# Servers (Ansible check mode)", ""]
            if not self.servers.changes:
                lines.append("No host would change.")
            for change in self.servers.changes:
                lines += [f"## `{change.host}`: {change.task}", ""]
                if change.diff:
                    lines += ["```diff", change.diff, "```", ""]
            if self.servers.failures:
                lines += ["", "## Hosts that could not be checked", ""]
                lines += [f"- `{f.host}`: {f.task}: {f.message}" for f in self.servers.failures]
        return redact("\n".join(lines))


class DriftFound(RuntimeError):
    """Drift was found and fail_on_drift is set."""


@flow(name="detect-drift", log_prints=True, task_runner=StoppingThreadPoolTaskRunner())
def detect_drift(
    stacks: Annotated[list[StackCheck], Field(description="Terraform stacks to plan")] = [],  # noqa: B006
    servers: Annotated[AnsibleTarget | None, Field(description="Playbook in check mode")] = AnsibleTarget(),  # noqa: B008
    fail_on_drift: Annotated[bool, Field(description="Fail the run when drift is found")] = True,
    notify_block: Annotated[str | None, Field(description="Notification block for drift")] = NOTIFY_BLOCK,
    vault_block: Annotated[str, Field(description="Secret block with the vault password")] = VAULT_BLOCK,
    backend_block: Annotated[str, Field(description="Terraform backend block")] = TF_BACKEND_BLOCK,
    aws_block: Annotated[str, Field(description="AwsCredentials block")] = AWS_BLOCK,
) -> DriftReport:
    """Plan every stack and check every server; report, notify and (optionally) fail on drift."""
    report = DriftReport()
    log = default_logger()
    for check in stacks:
        last = last_apply(check.stack, backend_block, aws_block)
        if not last.deployed:
            log.info("stack %s is not deployed (no state): nothing to compare", check.stack)
            report.not_deployed.append(check.stack)
            continue
        if last.record is not None and last.record.variables is not None:
            variables = dict(last.record.variables)
            log.info("planning %s with its last apply's variables %s", check.stack, sorted(variables))
        else:
            variables = dict(check.variables)
            log.info("planning %s with the configured variables (no record of its last apply's)", check.stack)
        report.stacks.append(plan_stack(check.stack, variables, backend_block, aws_block, lock=False))
        report.instances_behind += instances_behind(last.facts.auto_scaling_groups, aws_block)
    if servers is not None:
        result = run_playbook(servers.spec(check=True, diff=True), vault_block=vault_block)
        publish_recap(result, key="drift-recap")
        report.servers = result
    create_markdown_artifact(key="drift-report", markdown=report.markdown(), description=report.summary())
    if report.has_drift and notify_block:
        notify(notify_block, "drift", subject="devops-flows: drift detected", body=_notification(report))
    if report.servers is not None:
        report.servers.raise_for_failures()  # a host that cannot be checked is a failure too
    if report.has_drift and fail_on_drift:
        raise DriftFound(report.summary())
    return report


def _notification(report: DriftReport) -> str:
    lines: list[Any] = [report.summary()]
    lines += [f"- host {h.host}: {', '.join(h.tasks) or 'changes'}" for h in report.drifted_hosts]
    lines += [f"- stack {s}" for s in report.drifted_stacks]
    return "\n".join(lines)
