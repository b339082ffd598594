"""Figures of the reliability suite: `python -m tests.reliability.figures [--list] [--only-reliability]`.

Runs every test the catalogue names (tests/reliability plus the referenced tests elsewhere), then prints:
faults tried / survived, bad inputs tried / rejected before side effects, secret places scanned and
occurrences found (must be 0), and which test covers which item with its outcome. Every pytest session
that runs catalogue tests (CI's full run too) prints the same figures, without the per-item list, in its
terminal summary (`Recorder`, registered by tests/conftest.py). `--list` prints the mapping without
running anything. Exit code 1 when a test failed or a secret leaked (a leak fails the scan test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.reliability.catalogue import Item, items

SCAN_GLOB = "devops-flows-secret-scan*.json"  # the pipeline scan and the failure paths' scan
OUTCOMES_FILE = "outcomes.json"


class Recorder:
    """A pytest plugin: collects each test's outcome by node id and, at the end of any session that ran a
    catalogue test (CI's included), prints the figures in the terminal summary."""

    def __init__(self, figures_dir: Path, verbose: bool = False) -> None:
        self.outcomes: dict[str, str] = {}
        self.figures_dir = figures_dir
        self.verbose = verbose
        self.failed = False

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            self.outcomes[report.nodeid] = outcome

    def pytest_terminal_summary(self, terminalreporter) -> None:
        """Outcomes accumulate in the figures folder, so a run in phases (scripts/test: the parallel
        phase, then the exclusive one) prints the figures of all its phases at the end of the last."""
        if "PYTEST_XDIST_WORKER" in os.environ:
            return  # the controller reports
        saved = self.figures_dir / OUTCOMES_FILE
        if saved.exists():
            self.outcomes = {**json.loads(saved.read_text()), **self.outcomes}
        saved.write_text(json.dumps(self.outcomes))
        catalogue = items()
        ran = any(item_outcome(item, self.outcomes)[0] != "not-run" for item in catalogue)
        if not ran or os.environ.get("DEVOPS_RELIABILITY_DEFER") == "1":
            return
        scan = combined_scan(self.figures_dir)
        lines, self.failed = render(catalogue, self.outcomes, scan, self.verbose)
        terminalreporter.section("reliability figures (issue 7)")
        for line in lines:
            terminalreporter.write_line(line)


def combined_scan(figures_dir: Path) -> dict | None:
    """The secret scans of this session (the pipeline's, the failure paths'), added up."""
    scans = [json.loads(p.read_text()) for p in sorted(figures_dir.glob(SCAN_GLOB))]
    if not scans:
        return None
    return {
        "places_scanned": sum(s["places_scanned"] for s in scans),
        "argv_samples": sum(s["argv_samples"] for s in scans),
        "occurrences": sum(s["occurrences"] for s in scans),
        "where": [w for s in scans for w in s["where"]],
    }


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


def render(
    catalogue: list[Item], outcomes: dict[str, str], scan: dict | None, verbose: bool
) -> tuple[list[str], bool]:
    """The figures (and, verbose, every item with its tests); True when an item failed or a secret leaked."""
    totals: dict[str, dict[str, int]] = {}
    lines = []
    for item in catalogue:
        outcome, _ = item_outcome(item, outcomes)
        totals.setdefault(item.category, {}).setdefault(outcome, 0)
        totals[item.category][outcome] += 1
        if verbose or outcome == "failed":
            lines.append(
                f"  {outcome:9} [{item.category}] {item.name}" + (f"  ({item.note})" if item.note else "")
            )
            lines += [
                f"              {nid}: {o}"
                for nid, o in sorted(outcomes.items())
                if any(_matches(node, nid) for node in item.nodes) and (verbose or o != "passed")
            ]

    def count(cat: str, *what: str) -> int:
        return sum(totals.get(cat, {}).get(w, 0) for w in what)

    lines.append(
        f"faults: {count('fault', *totals.get('fault', {}))} listed, "
        f"{count('fault', 'passed', 'failed', 'known-gap')} tried, {count('fault', 'passed')} survived, "
        f"{count('fault', 'failed')} failed, {count('fault', 'known-gap')} known gaps, "
        f"{count('fault', 'not-run', 'skipped')} not run"
    )
    lines.append(
        f"bad inputs: {count('bad-input', 'passed', 'failed', 'known-gap')} tried, "
        f"{count('bad-input', 'passed')} rejected before any side effect, "
        f"{count('bad-input', 'known-gap')} known gaps (accepted or wrong error), "
        f"{count('bad-input', 'failed')} failed, {count('bad-input', 'not-run', 'skipped')} not run"
    )
    if scan:
        lines.append(
            f"secrets: {scan['places_scanned']} places scanned ({scan['argv_samples']} distinct argv), "
            f"{scan['occurrences']} occurrences found (must be 0)"
        )
        lines += [f"  LEAK {where}" for where in scan["where"]]
    else:
        lines.append("secrets: the pipeline scan did not run")
    failed = any(t.get("failed") for t in totals.values()) or bool(scan and scan["occurrences"])
    return lines, failed


def register(config) -> None:
    """From tests/conftest.py: one Recorder per session; the secret scan writes into a fresh folder."""
    if "DEVOPS_RELIABILITY_FIGURES" not in os.environ:
        os.environ["DEVOPS_RELIABILITY_FIGURES"] = tempfile.mkdtemp(prefix="devops-rel-figures-")
    verbose = os.environ.get("DEVOPS_RELIABILITY_VERBOSE") == "1"
    recorder = Recorder(Path(os.environ["DEVOPS_RELIABILITY_FIGURES"]), verbose=verbose)
    config.pluginmanager.register(recorder, "devops-reliability-figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the item -> test mapping only")
    parser.add_argument("--only-reliability", action="store_true", help="run tests/reliability only")
    args, pytest_args = parser.parse_known_args(argv)
    catalogue = items()
    if args.list:
        for item in catalogue:
            print(f"[{item.category}] {item.name}")
            for node in item.nodes or ("(no test)",):
                print(f"    {node}")
            if item.note:
                print(f"    note: {item.note}")
        return 0

    nodes = sorted({n for item in catalogue for n in item.nodes})
    if args.only_reliability:
        nodes = [n for n in nodes if n.startswith("tests/reliability")]
    env = {
        **os.environ,
        "DEVOPS_RELIABILITY_VERBOSE": "1",
        "DEVOPS_RELIABILITY_FIGURES": tempfile.mkdtemp(prefix="devops-rel-figures-"),
    }
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--tb=short"]
    # as scripts/test does: two xdist workers, then the exclusive tests alone (their summary has it all)
    phases = [
        ["-n", os.environ.get("DEVOPS_TEST_WORKERS", "2"), "--dist", "loadfile", "-m", "not exclusive"],
        ["-m", "exclusive"],
    ]
    codes = []
    for index, phase in enumerate(phases):
        defer = {"DEVOPS_RELIABILITY_DEFER": "1"} if index < len(phases) - 1 else {}
        codes.append(subprocess.run([*base, *phase, *pytest_args, *nodes], env={**env, **defer}).returncode)
    return 0 if all(code in (0, 5) for code in codes) and any(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
