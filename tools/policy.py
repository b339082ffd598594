"""Plan policies: plain Python rules over `terraform show -json PLAN`, selected per stack. No Prefect here.

The rules live in the infrastructure repository, one per file: `infra/policies/<rule_name>.py` defines
`check(plan: dict, options: dict)`, the rule `rule-name` (dashes for underscores). It returns its findings:
a list of `(level, message)` pairs (or `Verdict`s) with level `pass`, `warn` or `deny`; an empty list is a
pass. A rule may also define `validate(options: dict)` raising ValueError for options it cannot use.
`infra/policies/stacks.toml` selects the rules of each stack with their options:

    [stacks."scalac/internal-prod/xwiki"]
    require-tags = { tags = ["owner", "environment"] }

A stack without an entry has no policies. `selection(stack)` reads and checks the whole file first: a
malformed file, an entry for a stack that does not exist, an unknown rule, a rule file without `check`, or
options its `validate` rejects raise InvalidInput (so a flow can refuse before any process starts).
`evaluate` never lets a rule break the run: a rule that raises, or returns something that is not a list of
findings, is a deny carrying the error text.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from tools.errors import InvalidInput
from tools.settings import INFRA_DIR
from tools.terraform_workspace import TERRAFORM_DIR, list_stacks

__all__ = [
    "POLICY_DIR",
    "Level",
    "PolicyReport",
    "RuleResult",
    "Verdict",
    "evaluate",
    "has_policies",
    "known_rules",
    "selection",
]

POLICY_DIR = INFRA_DIR / "policies"
STACKS_FILE = "stacks.toml"
_RULE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class Level(StrEnum):
    passed = "pass"
    warn = "warn"
    deny = "deny"


class Verdict(NamedTuple):
    """One finding of a rule (a plain `(level, message)` tuple is the same thing)."""

    level: str
    message: str


class RuleResult(BaseModel):
    rule: str
    level: Level
    message: str


class PolicyReport(BaseModel):
    """The findings of a stack's rules over one plan, one row per finding (a rule with none: one pass)."""

    stack: str
    results: list[RuleResult] = Field(default_factory=list)

    @property
    def denied(self) -> list[RuleResult]:
        return [r for r in self.results if r.level is Level.deny]

    @property
    def warned(self) -> list[RuleResult]:
        return [r for r in self.results if r.level is Level.warn]

    @property
    def level(self) -> Level:
        return Level.deny if self.denied else Level.warn if self.warned else Level.passed

    def rows(self) -> list[dict[str, str]]:
        return [{"rule": r.rule, "level": r.level.value, "message": r.message} for r in self.results]

    def markdown(self) -> str:
        lines = [f"**Policies: {self.level.value}**", "", "| Rule | Level | Message |", "|---|---|---|"]
        for r in self.results:
            message = r.message.replace("|", "\\|")
            lines.append(f"| `{r.rule}` | {r.level.value} | {message} |")
        return "\n".join(lines)


def known_rules(base: Path | None = None) -> list[str]:
    """The rule names defined under `base` (files starting with `_` are helpers, not rules)."""
    base = base or POLICY_DIR
    return sorted(p.stem.replace("_", "-") for p in base.glob("*.py") if not p.name.startswith("_"))


def _load_rule(name: str, base: Path) -> ModuleType:
    path = base / f"{name.replace('-', '_')}.py"
    if not _RULE_NAME.match(name) or not path.is_file():
        raise InvalidInput(f"unknown policy rule {name!r}; rules in {base}: {', '.join(known_rules(base))}")
    spec = importlib.util.spec_from_file_location(f"devops_policy_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type] - a .py file always has a spec
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        raise InvalidInput(f"policy rule {name!r} ({path.name}) cannot be loaded: {exc!r}") from exc
    if not callable(getattr(module, "check", None)):
        raise InvalidInput(f"policy rule {name!r} ({path.name}) defines no check(plan, options) function")
    return module


def _read_stacks(base: Path, stacks_base: Path) -> dict[str, dict[str, dict[str, Any]]]:
    path = base / STACKS_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from exc
    if set(data) - {"stacks"} or not isinstance(data.get("stacks", {}), dict):
        raise InvalidInput(f'{path}: only a [stacks."<stack>"] table per stack is allowed')
    valid = set(list_stacks(stacks_base))
    for stack, rules in data.get("stacks", {}).items():
        if stack not in valid:
            raise InvalidInput(f"{path}: [stacks.{stack!r}] is no stack under infra/terraform")
        if not isinstance(rules, dict) or not all(isinstance(o, dict) for o in rules.values()):
            raise InvalidInput(f"{path}: [stacks.{stack!r}] must map rule names to option tables")
    return data.get("stacks", {})


def selection(
    stack: str, base: Path | None = None, stacks_base: Path | None = None
) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    """The rules of `stack` (rule name -> its check function and options), the whole of stacks.toml
    checked first. InvalidInput for anything malformed (see the module's docstring). `base` defaults to
    POLICY_DIR, `stacks_base` to infra/terraform (read at call time)."""
    base = base or POLICY_DIR
    stacks = _read_stacks(base, stacks_base or TERRAFORM_DIR)
    chosen: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
    for entry, rules in stacks.items():
        for name, options in rules.items():
            module = _load_rule(name, base)
            if callable(validate := getattr(module, "validate", None)):
                try:
                    validate(dict(options))
                except (ValueError, TypeError) as exc:
                    raise InvalidInput(f"policy rule {name!r} of {entry!r}: bad options: {exc}") from exc
            if entry == stack:
                chosen[name] = (module.check, dict(options))
    return chosen


def has_policies(stack: str, base: Path | None = None, stacks_base: Path | None = None) -> bool:
    return bool(selection(stack, base, stacks_base))


def _findings(result: Any) -> list[Verdict]:
    """A rule's return value as findings; ValueError when it is not a list of (level, message)."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str):
        result = [result]
    if not isinstance(result, list | tuple):
        raise ValueError(f"returned {type(result).__name__}, not a list of (level, message)")
    findings = []
    for item in result:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], str)):
            raise ValueError(f"returned {item!r}, not a (level, message) pair")
        if item[0] not in {level.value for level in Level}:
            raise ValueError(f"returned level {item[0]!r}; valid: pass, warn, deny")
        findings.append(Verdict(item[0], item[1]))
    return findings


def evaluate(
    stack: str,
    plan: Mapping[str, Any],
    base: Path | None = None,
    stacks_base: Path | None = None,
) -> PolicyReport:
    """Run the rules of `stack` over the plan JSON; each rule gets its own copy of plan and options."""
    import copy

    report = PolicyReport(stack=stack)
    for name, (check, options) in selection(stack, base, stacks_base).items():
        try:
            findings = _findings(check(copy.deepcopy(dict(plan)), copy.deepcopy(options)))
        except Exception as exc:  # noqa: BLE001 - a broken rule denies, it never passes silently
            findings = [Verdict("deny", f"rule failed: {type(exc).__name__}: {exc}")]
        report.results += [RuleResult(rule=name, level=Level(f.level), message=f.message) for f in findings]
        if not findings:
            report.results.append(RuleResult(rule=name, level=Level.passed, message="ok"))
    return report
