"""Terraform's machine-readable UI: the line handler of `terraform apply -auto-approve -json`, which plans
and applies in one process and prints one JSON object per line (docs: "Machine-readable UI"). No Prefect.

    {"@level":"info","@message":"aws_security_group.smoke: Plan to create","type":"planned_change",...}

`ApplyStream` keeps what the run needs from the messages it reads:

- `planned_change` (address, action) and `change_summary` (operation `plan`, then `apply`): the plan;
- `outputs`: first the plan's output changes (`action`), then the outputs' values after the apply.
  Terraform withholds a sensitive output's value there (`sensitive` true, no `value`), so none reaches a
  log; one that did would be registered for redaction at once;
- `diagnostic`: Terraform's own errors and warnings, as the text lines the plain UI prints (`Error:
  summary`, then the detail), so the runner's error mapping (a held lock: `StateLocked` naming its holder,
  a transient failure) reads exactly what it reads from a plain-text command;
- `resource_drift`: the addresses changed outside Terraform (the message carries no values).

Every message is logged as its readable `@message` (diagnostics with their detail) as it arrives, so the
run's log stays live and readable; a line that is not JSON (a crash, a CLI warning) is logged as it is.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

from tools.errors import TAIL_LINES
from tools.process import default_logger
from tools.redact import redact, register_secret
from tools.terraform_plan import OutputValue, PlanSummary, ResourceChange

__all__ = ["ACTIONS", "ApplyStream"]

# The `action` of a planned_change as the `actions` of `show -json` (no-op and read are no change).
ACTIONS: dict[str, list[str]] = {
    "create": ["create"],
    "update": ["update"],
    "delete": ["delete"],
    "replace": ["delete", "create"],
    "move": ["update"],
    "import": ["update"],
    "forget": ["forget"],
}
_COUNTS = ("add", "change", "remove", "import")


class ApplyStream:
    """The line handler (`on_line`) of one `terraform apply -json`; thread-safe (stdout and stderr are
    followed by two threads). After the run: `summary(stack)`, `outputs`, `drifted`, `error_lines()`."""

    def __init__(self, logger=None) -> None:  # noqa: ANN001 - a Logger or a LoggerAdapter
        self.log = logger or default_logger()
        self.planned: list[ResourceChange] = []
        self.plan_counts: dict[str, int] | None = None
        self.apply_counts: dict[str, int] | None = None
        self.outputs: dict[str, OutputValue] = {}
        self.output_changes: dict[str, str] = {}
        self.drifted: list[str] = []
        self.errors: list[str] = []  # the text lines of the error diagnostics
        self.text: deque[str] = deque(maxlen=4 * TAIL_LINES)  # readable lines, as the plain UI prints
        self._lock = threading.Lock()

    def __call__(self, stream: str, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            if line.strip():
                with self._lock:
                    self.text.append(line)
                self.log.info("%s", line)
            return
        with self._lock:
            shown = self._take(message)
            self.text.extend(shown)
        level = str(message.get("@level", "info"))
        log = self.log.error if level == "error" else self.log.warning if level == "warn" else self.log.info
        if shown:
            log("%s", "\n".join(shown))

    def _take(self, message: dict[str, Any]) -> list[str]:
        """Keep what `message` says; returns its readable lines."""
        kind = message.get("type")
        text = str(message.get("@message", ""))
        if kind == "planned_change":
            change = message.get("change") or {}
            actions = ACTIONS.get(str(change.get("action")))
            resource = change.get("resource") or {}
            if actions is not None:
                address = str(resource.get("addr", "?"))
                self.planned = [r for r in self.planned if r.address != address]
                self.planned.append(
                    ResourceChange(
                        address=address, type=str(resource.get("resource_type", "")), actions=actions
                    )
                )
        elif kind == "change_summary":
            changes = message.get("changes") or {}
            counts = {k: int(changes.get(k) or 0) for k in _COUNTS}
            if changes.get("operation") == "apply":
                self.apply_counts = counts
            else:
                self.plan_counts = counts
        elif kind == "resource_drift":
            address = str(((message.get("change") or {}).get("resource") or {}).get("addr", "?"))
            if address not in self.drifted:
                self.drifted.append(address)
        elif kind == "outputs":
            self._outputs(message.get("outputs") or {})
        elif kind == "diagnostic":
            return self._diagnostic(message.get("diagnostic") or {}, text)
        return [text] if text else []

    def _outputs(self, raw: dict[str, Any]) -> None:
        """The plan's `outputs` message has each output's `action`; the apply's has values (Terraform
        withholds a sensitive output's value: `sensitive` true, no `value`)."""
        for name, body in raw.items():
            body = body or {}
            if "action" in body:
                if body["action"] not in ("noop", "no-op"):
                    self.output_changes[name] = "+".join(ACTIONS.get(body["action"], [str(body["action"])]))
                continue
            out = OutputValue.model_validate(body)
            if out.sensitive and out.value is not None:
                register_secret(out.value if isinstance(out.value, str) else json.dumps(out.value))
            self.outputs[name] = out

    def _diagnostic(self, diag: dict[str, Any], text: str) -> list[str]:
        severity = "Error" if diag.get("severity") == "error" else "Warning"
        lines = [text or f"{severity}: {diag.get('summary', '')}"]
        if diag.get("address"):
            lines.append(f"  with {diag['address']}")
        lines += [redact(part) for part in str(diag.get("detail") or "").splitlines()]
        lines = [redact(line.rstrip()) for line in lines]
        if severity == "Error":
            self.errors += lines
        return lines

    def error_lines(self) -> list[str]:
        """What the plain UI would have printed last (Terraform's own errors among it), redacted again:
        a sensitive output registered after its line arrived is masked too. The runner's error mapping
        reads these instead of the JSON lines."""
        with self._lock:
            return [redact(line) for line in self.text]

    def summary(self, stack: str) -> PlanSummary:
        """The plan as the artifact shows it: the planned changes, output changes and counts. No attribute
        values and no drift: the stream carries no values (`drifted` only names what drifted)."""
        counts = self.plan_counts or {}
        resources = list(self.planned)
        return PlanSummary(
            stack=stack,
            has_changes=bool(resources or self.output_changes) or any(counts.get(k) for k in _COUNTS),
            add=counts.get("add", sum("create" in r.actions for r in resources)),
            change=counts.get("change", sum(r.actions == ["update"] for r in resources)),
            destroy=counts.get("remove", sum("delete" in r.actions for r in resources)),
            resources=resources,
            output_changes=dict(self.output_changes),
        )
