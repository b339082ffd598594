"""One flow run in a fresh process, as a served deployment runs it: `python -m bench.flowrun KIND JSON`.

Prints one line `BENCH_RESULT {...}` with the phases: interpreter + Prefect + flow import, the flow call,
each external command (from the process runner, which is wrapped to time it: the command still runs),
and every task run's duration read back from the API.
"""

from __future__ import annotations

import time

T0 = time.monotonic()

import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any  # noqa: E402

KINDS = ("rollout", "refresh", "release", "fanout", "serial")


def _load(kind: str):  # noqa: ANN202 - a Prefect flow
    if kind == "rollout":
        from flows.rollout import ami_rollout

        return ami_rollout
    if kind == "refresh":
        from flows.refresh import refresh_servers

        return refresh_servers
    if kind == "release":
        from flows.release import release

        return release
    from bench import fanout

    return fanout.bake_fanout if kind == "fanout" else fanout.bake_serial


def _time_commands(commands: dict[str, list[float]]) -> None:
    """Wrap the process runner where the tool modules imported it, to time each command."""
    import tools.ansible
    import tools.packer
    import tools.terraform_runner

    for module in (tools.ansible, tools.packer, tools.terraform_runner):
        original = module.run

        def timed(argv, *args: Any, _original=original, **kwargs: Any):  # noqa: ANN001, ANN202
            start = time.monotonic()
            try:
                return _original(argv, *args, **kwargs)
            finally:
                commands[kwargs.get("what") or " ".join(str(a) for a in argv[:2])].append(
                    time.monotonic() - start
                )

        module.run = timed


def _task_runs(flow_run_id: Any) -> dict[str, list[float]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    durations: dict[str, list[float]] = defaultdict(list)
    with get_client(sync_client=True) as client:
        ids = [flow_run_id]
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=ids))
        )
        ids += [c.id for c in children]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200)
    for run in runs:
        if run.start_time and run.end_time:
            name = re.sub(r"-\w{3}$", "", run.name) if run.name else run.task_key
            name = re.sub(r" \S+-[0-9a-f]{6}$", "", name)  # bake-one <host> <unique environment>
            durations[name].append((run.end_time - run.start_time).total_seconds())
    return dict(durations)


def main(argv: list[str]) -> int:
    kind, params = argv[0], json.loads(argv[1])
    flow = _load(kind)
    commands: dict[str, list[float]] = defaultdict(list)
    _time_commands(commands)
    if kind == "release":
        from flows.release import ReleaseParams

        params = {"params": ReleaseParams(**params["params"])}
    t_flow = time.monotonic()
    state = flow(**params, return_state=True)
    flow_seconds = time.monotonic() - t_flow
    ok = state.is_completed()
    result: dict[str, Any] = {
        "ok": ok,
        "import": t_flow - T0,
        "flow": flow_seconds,
        "commands": dict(commands),
    }
    t_read = time.monotonic()
    try:
        result["tasks"] = _task_runs(state.state_details.flow_run_id)
    except Exception as exc:  # noqa: BLE001 - phases are extra information
        result["tasks_error"] = repr(exc)
    result["bench_overhead"] = time.monotonic() - t_read  # the read-back above: not the flow's time
    if ok:
        value = state.result()
        if kind == "rollout":
            result["ami"] = value.bake.ami_id
            result["reused"] = value.bake.reused
            result["applied"] = value.apply.applied
        elif kind == "refresh":
            result["hosts"] = len(value.hosts)
        elif kind in ("fanout", "serial"):
            result["amis"] = [b.ami_id for b in value]
    else:
        result["error"] = str(state.result(raise_on_failure=False))[-2000:]
    print("BENCH_RESULT " + json.dumps(result, default=str), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
