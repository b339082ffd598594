"""Comparison 7: what a flow-run process costs before and after its flow, against a bare interpreter.

A served (or worker) deployment run is a fresh `python -m prefect.engine` process: interpreter start,
Prefect's import, the flow module's import, the flow run, the exit (Prefect drains its log and event
workers, then the interpreter tears down). This compares:

- `python -c pass` and `python -c "import prefect"` (whole process, wall);
- a flow-run process (`python -m bench.startup probe`): start + import of Prefect's engine, the import of
  `flows.rollout` on top of it (what the project adds), a no-op flow run against the bench's Prefect
  server, and the exit after it, with the project's `gc.freeze()` at exit (flows/process_exit.py) and
  without it (the same probe with the hook unregistered).

The probe prints wall-clock stamps (`time.time()`); the parent adds its own around the process, so
"start + import" includes the interpreter's start and "exit" is from the probe's last stamp until the
parent saw the process end. The import of flows.rollout is also what a pre-imported (forked) process would
save per run.
"""

from __future__ import annotations

import time

T0 = time.time()

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from bench.run import Report
    from devenv.bench_services import Services

COMPARISON = "7 flow-run start-up"


def probe(freeze: bool) -> None:
    """The flow-run process: import as the engine does, run a no-op flow, print the stamps, exit."""
    import prefect.flow_engine  # noqa: F401 - what `python -m prefect.engine` imports before the flow

    t_prefect = time.time()
    import flows.rollout  # noqa: F401 - the flow module of the heaviest deployment

    t_flows = time.time()
    if not freeze:
        import atexit

        from flows import process_exit

        atexit.unregister(process_exit.freeze_at_exit)
    from prefect import flow

    @flow(name="bench-startup-probe")
    def noop() -> int:
        return 1

    noop()
    stamps = {"start": T0, "prefect": t_prefect, "flows": t_flows, "end": time.time()}
    print("STARTUP " + json.dumps(stamps), flush=True)


def _spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, float]]:
    """(spawn time, end time, the probe's stamps) of one process."""
    from tools.settings import REPO_ROOT

    began = time.time()
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("STARTUP ")]
    return began, ended, (json.loads(lines[-1].split(" ", 1)[1]) if lines else {})


def compare_startup(services: Services, report: Report, reps: int, quick: bool) -> None:
    import os

    from bench.run import Ratio

    env = {**os.environ, **services.env}
    bare = report.figure(COMPARISON, "python -c pass (whole process)")
    plain = report.figure(COMPARISON, "python -c 'import prefect' (whole process)")
    engine = report.figure(COMPARISON, "flow-run process: start + import of prefect.flow_engine")
    project = report.figure(COMPARISON, "flow-run process: import of flows.rollout on top (the project's)")
    run = report.figure(COMPARISON, "flow-run process: a no-op flow run")
    frozen = report.figure(COMPARISON, "flow-run process: exit after it, gc.freeze at exit")
    unfrozen = report.figure(COMPARISON, "flow-run process: exit after it, without gc.freeze")
    for _ in range(reps):
        began, ended, _ = _spawn([sys.executable, "-c", "pass"], env)
        bare.samples.append(ended - began)
        began, ended, _ = _spawn([sys.executable, "-c", "import prefect"], env)
        plain.samples.append(ended - began)
        for freeze, exits in ((True, frozen), (False, unfrozen)):
            mode = "freeze" if freeze else "no-freeze"
            began, ended, at = _spawn([sys.executable, "-m", "bench.startup", "probe", mode], env)
            exits.samples.append(ended - at["end"])
            if freeze:
                engine.samples.append(at["prefect"] - began)
                project.samples.append(at["flows"] - at["prefect"])
                run.samples.append(at["end"] - at["flows"])
    report.ratios.append(Ratio(COMPARISON, "exit: gc.freeze / without", frozen, unfrozen, 0.5))
    report.ratios.append(
        Ratio(COMPARISON, "flows.rollout import / prefect.flow_engine import", project, engine, 1.0)
    )
    report.notes.append(
        "7: `python -m bench.startup probe` imports prefect.flow_engine (as `python -m prefect.engine` "
        "does), then flows.rollout, runs a no-op flow against the bench's Prefect server and exits; the exit "
        "is timed from its last stamp to the end of the process, with flows/process_exit.py's gc.freeze() "
        "at exit and with it unregistered. A pre-imported (forked) flow-run process would save the "
        "start + import rows."
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        probe(freeze=sys.argv[2:3] != ["no-freeze"])
