"""DriftReport: which stacks and hosts drifted, and its markdown (no tool runs)."""

from __future__ import annotations

from flows.detect_drift import DriftReport
from tasks.terraform import PlanSummary
from tools.ansible import HostRecap, PlaybookResult, TaskChange


def test_report_names_drifted_stacks_and_hosts() -> None:
    servers = PlaybookResult(
        playbook="internal_hosts.yml",
        check=True,
        exit_code=0,
        status="successful",
        hosts=[HostRecap(host="web1", ok=3, changed=1), HostRecap(host="web2", ok=3)],
        changes=[TaskChange(host="web1", task="Harden sshd", diff="-a\n+b")],
    )
    report = DriftReport(
        stacks=[
            PlanSummary(stack="xwiki", has_changes=True, change=1),
            PlanSummary(stack="net", has_changes=False),
        ],
        servers=servers,
    )
    assert report.has_drift
    assert report.drifted_stacks == ["xwiki"]
    assert [(h.host, h.tasks) for h in report.drifted_hosts] == [("web1", ["Harden sshd"])]
    md = report.markdown()
    assert "stacks xwiki" in md and "hosts web1" in md and "```diff\n-a\n+b\n```" in md


def test_no_drift() -> None:
    report = DriftReport(
        servers=PlaybookResult(
            playbook="p", exit_code=0, status="successful", hosts=[HostRecap(host="web1", ok=2)]
        )
    )
    assert not report.has_drift
    assert "No drift" in report.markdown()
