"""Figures of the reliability suite: `python -m tests.reliability.figures [--list] [--only-reliability]`.

Runs every test the catalogue names (tests/reliability plus the referenced tests elsewhere), then prints:
faults tried / survived, bad inputs tried / rejected before side effects, secret places scanned and
occurrences found (must be 0), and which test covers which item with its outcome.
`--list` prints the mapping without running anything. Exit code 1 when an item failed or a secret leaked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.reliability.catalogue import Item, items


class Recorder:
    """A pytest plugin collecting each test's outcome by node id."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            self.outcomes[report.nodeid] = outcome


def _matches(node: str, nodeid: str) -> bool:
    return nodeid == node or nodeid.startswith(node + "[") or nodeid.startswith(node + "::")


def item_outcome(item: Item, outcomes: dict[str, str]) -> tuple[str, list[str]]:
    """passed (every covering test passed) | failed | known-gap (xfail) | not-run."""
    seen = [o for node in item.nodes for nid, o in outcomes.items() if _matches(node, nid)]
    if not item.nodes or not seen:
        return "not-run", seen
    if any(o in ("failed", "error", "xpassed") for o in seen):
        return "failed", seen
    if any(o == "xfailed" for o in seen):
        return "known-gap", seen
    if any(o == "skipped" for o in seen):
        return "skipped", seen
    return "passed", seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the item -> test mapping only")
    parser.add_argument("--only-reliability", action="store_true", help="run tests/reliability only")
    args = parser.parse_args(argv)
    catalogue = items()
    if args.list:
        for item in catalogue:
            print(f"[{item.category}] {item.name}")
            for node in item.nodes or ("(no test)",):
                print(f"    {node}")
            if item.note:
                print(f"    note: {item.note}")
        return 0

    figures_dir = Path(tempfile.mkdtemp(prefix="devops-rel-figures-"))
    os.environ["DEVOPS_RELIABILITY_FIGURES"] = str(figures_dir)
    nodes = sorted({n for item in catalogue for n in item.nodes})
    if args.only_reliability:
        nodes = [n for n in nodes if n.startswith("tests/reliability")]
    import pytest

    recorder = Recorder()
    pytest.main(
        ["-q", "-p", "no:cacheprovider", "--show-capture=no", "--tb=line", *nodes], plugins=[recorder]
    )

    print("\n=== reliability figures ===")
    totals: dict[str, dict[str, int]] = {}
    lines = []
    for item in catalogue:
        outcome, seen = item_outcome(item, recorder.outcomes)
        totals.setdefault(item.category, {}).setdefault(outcome, 0)
        totals[item.category][outcome] += 1
        lines.append(
            f"  {outcome:9} [{item.category}] {item.name}" + (f"  ({item.note})" if item.note else "")
        )
        for node in item.nodes:
            lines.append(f"              {node}")
    print("\n".join(lines))

    def count(cat: str, *what: str) -> int:
        return sum(totals.get(cat, {}).get(w, 0) for w in what)

    scan_file = figures_dir / "devops-flows-secret-scan.json"
    scan = json.loads(scan_file.read_text()) if scan_file.exists() else None
    faults_tried = count("fault", "passed", "failed", "known-gap")
    print(
        f"\nfaults: {count('fault', *totals.get('fault', {}))} listed, {faults_tried} tried, "
        f"{count('fault', 'passed')} survived, {count('fault', 'failed')} failed, "
        f"{count('fault', 'known-gap')} known gaps, {count('fault', 'not-run', 'skipped')} not run"
    )
    bad_tried = count("bad-input", "passed", "failed", "known-gap")
    print(
        f"bad inputs: {bad_tried} tried, {count('bad-input', 'passed')} rejected before any side effect, "
        f"{count('bad-input', 'known-gap')} known gaps (accepted or wrong error), "
        f"{count('bad-input', 'failed')} failed"
    )
    if scan:
        print(
            f"secrets: {scan['places_scanned']} places scanned ({scan['argv_samples']} distinct argv), "
            f"{scan['occurrences']} occurrences found (must be 0)"
        )
        for where in scan["where"]:
            print(f"  LEAK {where}")
    else:
        print("secrets: the pipeline scan did not run")
    leaked = bool(scan and scan["occurrences"])
    failed = any(t.get("failed") for t in totals.values())
    return 1 if leaked or failed or scan is None else 0


if __name__ == "__main__":
    sys.exit(main())
