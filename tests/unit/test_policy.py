"""The policy loader and evaluator (tools/policy.py) on a policies tree of the test's own: a broken rule
denies, a malformed selection is InvalidInput, findings come out as typed rows; PolicyDenied pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tools import policy
from tools.errors import InvalidInput, PolicyDenied, TerraformError, is_transient

PLAN = {
    "resource_changes": [
        {"address": "aws_instance.a", "type": "aws_instance", "change": {"actions": ["create"]}}
    ]
}


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """(policies dir, terraform dir with the stack `s/one`)."""
    stacks = tmp_path / "terraform" / "s" / "one"
    stacks.mkdir(parents=True)
    (stacks / "main.tf").write_text("")
    rules = tmp_path / "policies"
    rules.mkdir()
    return rules, tmp_path / "terraform"


def _rule(base: Path, name: str, body: str) -> None:
    (base / f"{name.replace('-', '_')}.py").write_text(body)


def _select(base: Path, rules: str) -> None:
    (base / "stacks.toml").write_text(f'[stacks."s/one"]\n{rules}\n')


def test_findings_become_rows_and_a_rule_without_findings_passes(trees) -> None:
    base, stacks = trees
    _rule(base, "two-findings", 'def check(plan, options):\n    return [("warn", "w"), ("pass", "p")]\n')
    _rule(base, "one-tuple", "def check(plan, options):\n    return ('deny', options['say'])\n")
    _rule(base, "nothing", "def check(plan, options):\n    plan.clear()\n    return []\n")
    _rule(base, "_helper", "raise RuntimeError('helpers are not rules')\n")
    _select(base, 'two-findings = {}\none-tuple = { say = "no" }\nnothing = {}')
    report = policy.evaluate("s/one", PLAN, base, stacks)
    assert report.rows() == [
        {"rule": "two-findings", "level": "warn", "message": "w"},
        {"rule": "two-findings", "level": "pass", "message": "p"},
        {"rule": "one-tuple", "level": "deny", "message": "no"},
        {"rule": "nothing", "level": "pass", "message": "ok"},
    ]
    assert report.level is policy.Level.deny and [r.rule for r in report.denied] == ["one-tuple"]
    assert [r.rule for r in report.warned] == ["two-findings"]
    assert PLAN["resource_changes"]  # a rule gets a copy of the plan
    assert "| `one-tuple` | deny | no |" in report.markdown()
    assert policy.known_rules(base) == ["nothing", "one-tuple", "two-findings"]
    assert policy.evaluate("s/other", PLAN, base, stacks).results == []  # no entry: no policies


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("def check(plan, options):\n    raise KeyError('resource_changes')\n", "KeyError"),
        ("def check(plan, options):\n    return 'deny'\n", "returned str"),
        ("def check(plan, options):\n    return None\n", "returned NoneType"),
        ("def check(plan, options):\n    return [('block', 'x')]\n", "level 'block'"),
        ("def check(plan, options):\n    return [('warn', 3)]\n", "not a (level, message) pair"),
    ],
)
def test_a_rule_that_raises_or_returns_something_malformed_denies(trees, body: str, expected: str) -> None:
    base, stacks = trees
    _rule(base, "broken", body)
    _select(base, "broken = {}")
    report = policy.evaluate("s/one", PLAN, base, stacks)
    assert [(r.rule, r.level.value) for r in report.results] == [("broken", "deny")]
    assert report.results[0].message.startswith("rule failed:") and expected in report.results[0].message


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[stacks."s/one"\nok = {}', "not valid TOML"),
        ('[stacks."s/one"]\nno-such-rule = {}', "unknown policy rule 'no-such-rule'"),
        ('[stacks."s/one"]\n"../ok" = {}', "unknown policy rule"),
        ('[stacks."s/two"]\nok = {}', "no stack under infra/terraform"),
        ('[stacks."s/one"]\nok = true', "must map rule names to option tables"),
        ('[stack."s/one"]\nok = {}', "only a [stacks"),
        ('[stacks."s/one"]\nno-check = {}', "defines no check"),
        ('[stacks."s/one"]\nbad-import = {}', "cannot be loaded"),
        ('[stacks."s/one"]\npicky = { size = "big" }', "bad options: size must be a number"),
    ],
)
def test_a_malformed_selection_is_invalid_input(trees, toml: str, expected: str) -> None:
    base, stacks = trees
    _rule(base, "ok", "def check(plan, options):\n    return []\n")
    _rule(base, "no-check", "CHECK = 1\n")
    _rule(base, "bad-import", "import no_such_module_here\n")
    _rule(
        base,
        "picky",
        "def validate(options):\n    if not isinstance(options.get('size'), int):\n"
        "        raise ValueError('size must be a number')\n\ndef check(plan, options):\n    return []\n",
    )
    (base / "stacks.toml").write_text(toml)
    with pytest.raises(InvalidInput, match=expected.replace("[", r"\[")):
        policy.selection("s/one", base, stacks)


def test_no_stacks_file_means_no_policies(trees) -> None:
    base, stacks = trees
    assert not policy.has_policies("s/one", base, stacks)


def test_policy_denied_is_a_permanent_terraform_error_that_survives_pickling() -> None:
    err = PolicyDenied("denied: r: m", denials=[("r", "m")], hint="fix it")
    assert isinstance(err, TerraformError) and not is_transient(err)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is PolicyDenied and again.denials == [("r", "m")] and "hint: fix it" in str(again)
