"""What a playbook run did, parsed from ansible-runner's job events: the recap per host, the failures
(with Ansible's own reason: for an unreachable host the SSH/connection error, not a loop's generic
"All items completed"), and the changes with their diffs. Every message is redacted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from tools.errors import AnsibleRunFailed
from tools.redact import redact

__all__ = ["HostFailure", "HostRecap", "PlaybookResult", "TaskChange", "parse_events"]


class HostRecap(BaseModel):
    """One line of Ansible's PLAY RECAP."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def broken(self) -> bool:
        return self.failed > 0 or self.unreachable > 0


class HostFailure(BaseModel):
    """A task that failed on a host, or the host being unreachable, with Ansible's own message."""

    host: str
    task: str
    unreachable: bool = False
    message: str = ""


class TaskChange(BaseModel):
    """A task that changed (or, in check mode, would change) a host, with its diff when Ansible gave one."""

    host: str
    task: str
    role: str | None = None
    diff: str = ""


class PlaybookResult(BaseModel):
    """What a playbook run did: the recap per host, failures, changes."""

    playbook: str
    check: bool = False
    exit_code: int
    status: str = Field(description="ansible-runner's status: successful, failed, canceled, timeout")
    hosts: list[HostRecap] = Field(default_factory=list)
    failures: list[HostFailure] = Field(default_factory=list)
    changes: list[TaskChange] = Field(default_factory=list)
    tail: list[str] = Field(default_factory=list, description="Last output lines (redacted)")

    @property
    def failed_hosts(self) -> list[str]:
        return [h.host for h in self.hosts if h.broken]

    @property
    def changed_hosts(self) -> list[str]:
        return [h.host for h in self.hosts if h.changed > 0]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failed_hosts

    def failure_summary(self) -> str:
        lines = []
        for f in self.failures:
            kind = "unreachable" if f.unreachable else f"task '{f.task}' failed"
            lines.append(f"{f.host}: {kind}: {f.message}".rstrip(": "))
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """AnsibleRunFailed naming each failed/unreachable host and its failing task."""
        if self.ok:
            return
        hosts = self.failed_hosts
        if hosts:
            message = f"playbook {self.playbook} failed on {len(hosts)} host(s): {', '.join(hosts)}"
        else:
            message = f"playbook {self.playbook} failed ({self.status}) before any host recap"
        detail = self.failure_summary()
        hint = None
        text = "\n".join([detail, *self.tail]).lower()
        if "decryption failed" in text or "no vault secrets" in text:
            hint = "the vault password (Secret block) does not decrypt the vaulted values in host_vars"
        raise AnsibleRunFailed(
            message + (f"\n{detail}" if detail else ""),
            exit_code=self.exit_code,
            tail=self.tail,
            hint=hint,
        )

    def table(self) -> list[dict[str, Any]]:
        """Rows for a Prefect table artifact."""
        failing = {f.host: f for f in self.failures}
        return [
            {
                **h.model_dump(),
                "failing task": (
                    "(unreachable)"
                    if failing.get(h.host) and failing[h.host].unreachable
                    else failing[h.host].task
                    if h.host in failing
                    else ""
                ),
                "reason": failing[h.host].message if h.host in failing else "",
            }
            for h in self.hosts
        ]


def parse_events(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Recap, failures and changes from ansible-runner job events (in counter order)."""
    hosts: list[HostRecap] = []
    failures: list[HostFailure] = []
    changes: list[TaskChange] = []
    diffs: dict[tuple[str, str], list[str]] = {}
    for event in sorted(events, key=lambda e: e.get("counter", 0)):
        kind = event.get("event")
        data = event.get("event_data") or {}
        host, task = str(data.get("host") or ""), str(data.get("task") or "")
        task_key = (host, str(data.get("task_uuid") or task))
        if kind == "runner_on_file_diff":
            text = redact(str(event.get("stdout") or "")).replace("\r\n", "\n").strip("\n")
            if text:
                diffs.setdefault(task_key, []).append(text)
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            if not isinstance(res, Mapping) or "changed" not in res:  # no_log results may be stripped
                res = {"changed": str(event.get("stdout") or "").lstrip().startswith("changed:")}
            if res.get("changed"):
                changes.append(
                    TaskChange(
                        host=host,
                        task=task,
                        role=data.get("role") or None,
                        diff="\n".join(diffs.pop(task_key, [])),
                    )
                )
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            message = _failure_message(data.get("res") or {})
            if not message or "censored" in message or "no_log" in message:
                message = _error_line(str(event.get("stdout") or "")) or message
            failures.append(HostFailure(host=host, task=task, message=message))
        elif kind == "runner_on_unreachable":
            failures.append(
                HostFailure(host=host, task=task, unreachable=True, message=_unreachable_message(event))
            )
        elif kind == "playbook_on_stats":
            hosts = _recap(data)
    return {"hosts": hosts, "failures": failures, "changes": changes}


def _recap(data: Mapping[str, Any]) -> list[HostRecap]:
    columns = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "dark": "unreachable",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    names: set[str] = set()
    for key in (*columns, "processed"):
        names.update((data.get(key) or {}).keys())
    return [
        HostRecap(
            host=name, **{field: int((data.get(key) or {}).get(name, 0)) for key, field in columns.items()}
        )
        for name in sorted(names)
    ]


def _failure_message(res: Mapping[str, Any]) -> str:
    """Ansible's own reason: the result's `msg`, or for a loop the failing/unreachable item's message
    instead of the loop's generic "All items completed" (an unreachable host's SSH/connection error)."""
    if not isinstance(res, Mapping):
        return redact(str(res))[:500]
    top = str(res.get("msg") or "").strip()
    parts = [top]
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and (item.get("failed") or item.get("unreachable")):
            label = item.get("item")
            detail = str(item.get("msg") or item.get("stderr") or item.get("stdout") or "").strip()
            if top.lower().startswith("all items completed") or "one or more items failed" in top.lower():
                parts = []
            parts.append(f"item {label}: {detail}".strip() if label is not None else detail)
            break
    if not res.get("results") and res.get("stderr"):
        parts.append(str(res["stderr"]).strip())
    return redact("; ".join(p for p in parts if p))[:500]


def _unreachable_message(event: Mapping[str, Any]) -> str:
    """The connection error of an unreachable host: the result's message, else Ansible's printed one."""
    data = event.get("event_data") or {}
    message = _failure_message(data.get("res") or {})
    if message and not message.lower().startswith("all items completed"):
        return message
    stdout = str(event.get("stdout") or "").replace("\r\n", "\n")
    found = re.search(r'"msg":\s*"((?:[^"\\]|\\.)*)"', stdout)
    if found:
        try:
            return redact(json.loads(f'"{found.group(1)}"'))[:500]
        except ValueError:
            return redact(found.group(1))[:500]
    return message


def _error_line(stdout: str) -> str:
    """Ansible's own "[ERROR]: ..." line in an event's output (what no_log results still show)."""
    for line in stdout.replace("\r\n", "\n").splitlines():
        if line.startswith("[ERROR]:"):
            return redact(line.removeprefix("[ERROR]:").strip())[:500]
    return ""
