"""The benchmark: our flows against plain bash (the article's jobs), on the sandbox.  `scripts/bench`

    scripts/bench [--quick] [--reps N] [--only rollout,fanout,refresh,release,memory,startup]
                  [--database sqlite]
    scripts/bench --profile     a full and a no-change ami-rollout under pyinstrument (bench/results/)

Every flow run starts in a fresh Python process (`bench.flowrun`), as a served deployment runs it, so
the figures include interpreter start, Prefect import and its API calls. The two sides of a comparison
run in the same invocation, interleaved (A B A B ...); the table gives median, min and max per figure and
the ratio of medians against its target. `--quick` (CI) runs 1 repetition at the smallest sizes and only
proves the bench runs: its figures are not meant to meet the targets.

Private services (devenv.bench_services): its own moto server and Prefect server (on its own PostgreSQL unless
`--database sqlite`); containers, images, volumes
on the shared engine are named `bench-<id>` and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv.bench_services import BENCH_LABEL, Services
from tools.settings import INFRA_DIR, REPO_ROOT

COMPARISONS = ("rollout", "fanout", "refresh", "release", "memory", "startup")
RESULTS_DIR = REPO_ROOT / "bench" / "results"
STACK = "scalac/internal-prod/xwiki"


# --- figures and the table ------------------------------------------------------------------------


@dataclass
class Figure:
    comparison: str
    name: str
    samples: list[float] = field(default_factory=list)
    unit: str = "s"

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


@dataclass
class Ratio:
    comparison: str
    name: str
    numerator: Figure
    denominator: Figure
    target: float
    at_most: bool = True  # ratio <= target; else ratio >= target

    @property
    def value(self) -> float:
        d = self.denominator.median
        return self.numerator.median / d if d and d == d else float("nan")

    @property
    def passed(self) -> bool:
        v = self.value
        return v == v and (v <= self.target if self.at_most else v >= self.target)


@dataclass
class Efficiency(Ratio):
    """Parallel efficiency: the flow's speed-up (serial / parallel) divided by bash's speed-up on the same
    work (`baseline_serial` / `baseline_parallel`), so 1.0 means the flow parallelises as well as bash."""

    baseline_serial: Figure = field(default_factory=lambda: Figure("", ""))
    baseline_parallel: Figure = field(default_factory=lambda: Figure("", ""))
    at_most: bool = False

    @property
    def value(self) -> float:
        flow = super().value
        d = self.baseline_parallel.median
        bash = self.baseline_serial.median / d if d and d == d else float("nan")
        return flow / bash if bash and bash == bash else float("nan")


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def figure(self, comparison: str, name: str, unit: str = "s") -> Figure:
        fig = Figure(comparison, name, unit=unit)
        self.figures.append(fig)
        return fig


def _fmt(value: float, unit: str) -> str:
    if value != value:
        return "-"
    return f"{value:.0f} MiB" if unit == "MiB" else f"{value:.2f} s"


def table(report: Report) -> str:
    rows = ["| Comparison | Figure | n | median | min | max |", "|---|---|---:|---:|---:|---:|"]
    for f in report.figures:
        lo, hi = (min(f.samples), max(f.samples)) if f.samples else (float("nan"), float("nan"))
        rows.append(
            f"| {f.comparison} | {f.name} | {len(f.samples)} | {_fmt(f.median, f.unit)} "
            f"| {_fmt(lo, f.unit)} | {_fmt(hi, f.unit)} |"
        )
    rows += ["", "| Comparison | Ratio (of medians) | value | target | result |", "|---|---|---:|---:|---|"]
    for r in report.ratios:
        op = "<=" if r.at_most else ">="
        value = "-" if r.value != r.value else f"{r.value:.2f}"
        rows.append(
            f"| {r.comparison} | {r.name} | {value} | {op} {r.target:g} | {'pass' if r.passed else 'FAIL'} |"
        )
    return "\n".join(rows)


# --- machine ---------------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    exe = shutil.which(argv[0]) or argv[0]
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"


def machine() -> list[str]:
    cpu = "?"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    from importlib.metadata import version

    venv = Path(sys.executable).parent
    docker = "?"
    try:
        import docker as docker_sdk

        docker = docker_sdk.DockerClient(base_url=os.environ["DOCKER_HOST"]).version().get("Version", "?")
    except Exception:  # noqa: BLE001, S110 - informational
        pass
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}; load average at start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- prefect {version('prefect')}, prefect-docker {version('prefect-docker')}, "
        f"prefect-aws {version('prefect-aws')}, ansible-core {version('ansible-core')}, "
        f"ansible-runner {version('ansible-runner')}, moto {version('moto')}",
        f"- {_first_line(['packer', 'version'])}; {_first_line(['terraform', 'version'])}; "
        f"Docker engine {docker}; {_first_line([str(venv / 'ansible-playbook'), '--version'])}",
    ]


# --- running things --------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    result: dict[str, Any]


class BenchError(RuntimeError):
    pass


def run_flow(
    services: Services, kind: str, params: dict[str, Any], timeout: float = 900, profile: Path | None = None
) -> Run:
    """One flow run in a fresh process; its wall time and its BENCH_RESULT phases. With `profile`, under
    pyinstrument (a statistical profiler: its text report goes to that file; the times are not figures)."""
    profiler = ["-m", "pyinstrument", "--renderer", "text", "--outfile", str(profile)] if profile else []
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, *profiler, "-m", "bench.flowrun", kind, json.dumps(params)],
        cwd=REPO_ROOT,
        env={**os.environ, **services.env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    result = json.loads(lines[-1].split(" ", 1)[1]) if lines else {}
    seconds -= result.get("bench_overhead", 0.0)  # its task-run read-back, which a served run does not do
    if proc.returncode != 0 or not result.get("ok"):
        detail = result.get("error") or (proc.stdout + proc.stderr)[-3000:]
        raise BenchError(f"flow {kind} failed (exit {proc.returncode}): {detail}")
    return Run(seconds, result)


def run_bash(services: Services, script: Path, env: dict[str, str], timeout: float = 900) -> Run:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(script)],
        cwd=REPO_ROOT,
        env={**os.environ, **services.env, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-3000:]
        raise BenchError(f"{script.name} failed (exit {proc.returncode}): {output}")
    found = re.findall(r"^BENCH_AMI=(\S+)$", proc.stdout, re.MULTILINE)
    return Run(seconds, {"ami": found[-1] if found else None})


def tag(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --- 1 + 2: AMI rollout: flow vs bash, no-change vs full ------------------------------------------


def _phase_table(title: str, runs: list[Run]) -> list[str]:
    """Median of each phase over `runs`: process, import, flow call, each command, each task run."""

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s" if values else "-"

    lines = [f"**{title}** (median of {len(runs)})", "", "| Phase | median |", "|---|---:|"]
    lines.append(f"| whole process (wall) | {med([r.seconds for r in runs])} |")
    lines.append(f"| interpreter + Prefect + flow import | {med([r.result['import'] for r in runs])} |")
    lines.append(f"| flow call (engine, API, tasks) | {med([r.result['flow'] for r in runs])} |")
    lines.append(
        "| process start/exit (wall - import - flow) | "
        f"{med([r.seconds - r.result['import'] - r.result['flow'] for r in runs])} |"
    )
    commands = sorted({c for r in runs for c in r.result.get("commands", {})})
    for name in commands:
        lines.append(f"| command: {name} | {med([sum(r.result['commands'].get(name, [0])) for r in runs])} |")
    tool_total = [sum(sum(v) for v in r.result.get("commands", {}).values()) for r in runs]
    lines.append(f"| all commands | {med(tool_total)} |")
    lines.append(
        "| flow call minus commands (Prefect engine, API calls, boto3) | "
        f"{med([r.result['flow'] - t for r, t in zip(runs, tool_total, strict=True)])} |"
    )
    tasks = sorted({t for r in runs for t in r.result.get("tasks", {})})
    for name in tasks:
        lines.append(f"| task run: {name} | {med([sum(r.result['tasks'].get(name, [0])) for r in runs])} |")
    return [*lines, ""]


def _bash_bake_env(services: Services) -> dict[str, str]:
    """What bench/bake.sh needs: the template as the flow derives it without provisioners (communicator
    none: nothing to provision against moto)."""
    template = services.home / "packer_template.no-provisioners.json"
    data = json.loads((INFRA_DIR / "packer" / "packer_template.json").read_text())
    data.pop("provisioners", None)
    template.write_text(json.dumps(data, indent=2))
    return {"REPO": str(REPO_ROOT), "TEMPLATE": str(template)}


def compare_rollout(services: Services, report: Report, reps: int, quick: bool) -> None:
    """1: full rollout, flow vs the original job as bash (bake, init, apply -auto-approve) and vs a bash
    copy of the flow's own commands. 2: no-change rollout (same bake inputs right after) vs full."""
    flow_name, bash_name = f"bench-flow-{services.run_id}", f"bench-bash-{services.run_id}"
    bash_env = {
        **_bash_bake_env(services),
        "NAME": bash_name,
        "STATE_KEY": f"bench/{services.run_id}/bash/terraform.tfstate",
    }
    script = REPO_ROOT / "bench" / "rollout.sh"

    rollout_backend = services.backend("rollout")

    def flow_params(env_tag: str) -> dict[str, Any]:
        return {
            "request": {
                "bake": {"host": "xwiki", "environment": env_tag},
                "stack": STACK,
                "variables": {"name": flow_name},
                "refresh": {"enabled": False},  # the original job replaces no instance either
            },
            "backend_block": rollout_backend,
        }

    original_env = {
        **bash_env,
        "NAME": f"{bash_name}-orig",
        "STATE_KEY": f"bench/{services.run_id}/original/terraform.tfstate",
        "JOB": "original",
    }
    copy_env = {**bash_env, "JOB": "copy"}
    if not quick:  # the stacks exist before the timed runs: every timed full rollout is an update
        run_flow(services, "rollout", flow_params(tag("warm")))
        run_bash(services, script, {**copy_env, "ENV_TAG": tag("warm")})
        run_bash(services, script, {**original_env, "ENV_TAG": tag("warm")})
    full = report.figure("1 full AMI rollout", "ami-rollout flow (bake + apply)")
    original = report.figure("1 full AMI rollout", "original job as bash: bake, init, apply -auto-approve")
    bash = report.figure(
        "1 full AMI rollout", "bash copy of the flow's commands (plan -out, show, apply, output)"
    )
    same = report.figure("2 no-change rollout", "ami-rollout flow, hash hit + empty plan")
    full_runs, same_runs = [], []
    for _ in range(reps):
        env_tag = tag("full")
        run = run_flow(services, "rollout", flow_params(env_tag))
        if run.result.get("reused") or not run.result.get("applied"):
            raise BenchError(f"a full rollout reused its AMI or applied nothing: {run.result}")
        full.samples.append(run.seconds)
        full_runs.append(run)
        again = run_flow(services, "rollout", flow_params(env_tag))
        if not again.result.get("reused") or again.result.get("applied"):
            raise BenchError(f"the no-change rollout baked or applied: {again.result}")
        same.samples.append(again.seconds)
        same_runs.append(again)
        original.samples.append(run_bash(services, script, {**original_env, "ENV_TAG": tag("orig")}).seconds)
        bash.samples.append(run_bash(services, script, {**copy_env, "ENV_TAG": tag("bash")}).seconds)
    report.ratios.append(Ratio("1 full AMI rollout", "flow / original job", full, original, 1.10))
    report.ratios.append(Ratio("1 full AMI rollout", "flow / bash copy of its commands", full, bash, 1.10))
    report.ratios.append(Ratio("2 no-change rollout", "no-change / full (flow)", same, full, 0.15))
    report.phases += ["### Where the time goes: AMI rollout", ""]
    report.phases += _phase_table("Full rollout (flow)", full_runs)
    report.phases += _phase_table("No-change rollout (flow)", same_runs)


def profile_rollout(services: Services, out_dir: Path) -> list[Path]:
    """A full and a no-change ami-rollout under pyinstrument (after a warm-up, so the full one is an update
    as in comparison 1): where the flow process spends its time besides waiting for Packer and Terraform."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"bench-profile-{services.run_id}"
    profile_backend = services.backend("profile")

    def params(env_tag: str) -> dict[str, Any]:
        return {
            "request": {
                "bake": {"host": "xwiki", "environment": env_tag},
                "stack": STACK,
                "variables": {"name": name},
                "refresh": {"enabled": False},
            },
            "backend_block": profile_backend,
        }

    run_flow(services, "rollout", params(tag("warm")))
    env_tag = tag("profile")
    full, same = out_dir / "profile-rollout-full.txt", out_dir / "profile-rollout-no-change.txt"
    run_flow(services, "rollout", params(env_tag), profile=full)
    run_flow(services, "rollout", params(env_tag), profile=same)
    return [full, same]


# --- 3: fan-out of bakes ---------------------------------------------------------------------------


def compare_fanout(services: Services, report: Report, reps: int, quick: bool) -> None:
    count = 2 if quick else 4
    hosts = ["xwiki", "jenkins"]

    def specs(prefix: str) -> dict[str, Any]:
        return {"specs": [{"host": hosts[i % 2], "environment": tag(f"{prefix}{i}")} for i in range(count)]}

    def bash_env(prefix: str, parallel: bool) -> dict[str, str]:
        bakes = " ".join(f"{hosts[i % 2]}:{tag(f'{prefix}{i}')}" for i in range(count))
        return {**_bash_bake_env(services), "BAKES": bakes, "PARALLEL": "1" if parallel else "0"}

    script = REPO_ROOT / "bench" / "bakes.sh"
    fan = report.figure("3 fan-out bakes", f"{count} bakes, .submit() on ThreadPoolTaskRunner")
    ser = report.figure("3 fan-out bakes", f"{count} bakes, one after the other")
    bash_fan = report.figure("3 fan-out bakes", f"bash: {count} packer bakes at once (& + wait)")
    bash_ser = report.figure("3 fan-out bakes", f"bash: {count} packer bakes one after the other")
    fan_runs: list[Run] = []
    ser_runs: list[Run] = []
    for _ in range(reps):
        run = run_flow(services, "fanout", specs("fan"))
        fan.samples.append(run.seconds)
        fan_runs.append(run)
        ser_runs.append(run_flow(services, "serial", specs("ser")))
        ser.samples.append(ser_runs[-1].seconds)
        bash_fan.samples.append(run_bash(services, script, bash_env("bfan", parallel=True)).seconds)
        bash_ser.samples.append(run_bash(services, script, bash_env("bser", parallel=False)).seconds)
    report.phases += ["### Where the time goes: bakes", ""]
    report.phases += _phase_table(f"{count} bakes fanned out", fan_runs)
    report.phases += _phase_table(f"{count} bakes serial", ser_runs)
    report.ratios.append(Ratio("3 fan-out bakes", "speed-up serial / fan-out", ser, fan, 2.5, at_most=False))
    report.ratios.append(
        Ratio(
            "3 fan-out bakes", "bash speed-up (this machine's limit)", bash_ser, bash_fan, 2.5, at_most=False
        )
    )
    report.ratios.append(
        Efficiency(
            "3 fan-out bakes",
            "parallel efficiency: flow speed-up / bash speed-up",
            ser,
            fan,
            0.95,
            baseline_serial=bash_ser,
            baseline_parallel=bash_fan,
        )
    )
    inner_fan = report.figure("3 fan-out bakes", "fan-out: flow call only (no process start/import)")
    inner_fan.samples = [r.result["flow"] for r in fan_runs]
    report.notes.append(
        "3: bake-image only accepts the host var files of infra/packer/vars/host (xwiki, jenkins) and a "
        "fixed packer dir, so the bench bakes those two hosts with distinct `environment` values (distinct "
        "content hashes: every bake runs Packer). The bash rows run the same packer validate + build "
        "(bench/bake.sh) all at once and one after the other: their speed-up is what this machine allows "
        "(against moto a bake is CPU work, not waiting on EC2)."
    )


# --- 4: refresh-servers, N hosts vs 1 --------------------------------------------------------------


def _inventory(services: Services, hosts: int) -> Path:
    root = services.home / "targets"
    lines = ["[internal]"]
    for i in range(1, hosts + 1):
        lines.append(
            f"bench{i} ansible_connection=local "
            f'ansible_python_interpreter="{{{{ ansible_playbook_python }}}}" target_root={root}/bench{i}'
        )
    lines += ["", "[docker_hosts]", ""]
    path = services.home / f"inventory-{hosts}.ini"
    path.write_text("\n".join(lines))
    return path


def compare_refresh(services: Services, report: Report, reps: int, quick: bool) -> None:
    hosts = 2 if quick else 8

    def params(n: int) -> dict[str, Any]:
        return {"target": {"inventory": str(_inventory(services, n)), "forks": max(n, 1)}}

    vault_file = services.home / "vault-password"
    vault_file.write_text(services.env["DEVOPS_VAULT_PASSWORD"] + "\n")
    vault_file.chmod(0o600)

    def bash_env(n: int) -> dict[str, str]:
        return {
            "REPO": str(REPO_ROOT),
            "ANSIBLE_PLAYBOOK": str(Path(sys.executable).with_name("ansible-playbook")),
            "INVENTORY": str(_inventory(services, n)),
            "FORKS": str(max(n, 1)),
            "VAULT_PASSWORD_FILE": str(vault_file),
        }

    script = REPO_ROOT / "bench" / "refresh.sh"
    if not quick:  # first runs write the managed files; the timed runs are steady-state refreshes
        run_flow(services, "refresh", params(1))
        run_flow(services, "refresh", params(hosts))
    one = report.figure("4 refresh-servers", "1 host")
    bash_one = report.figure("4 refresh-servers", "bash: the same ansible-playbook, 1 host")
    many = report.figure("4 refresh-servers", f"{hosts} hosts (forks={hosts})")
    bash_many = report.figure("4 refresh-servers", f"bash: the same ansible-playbook, {hosts} hosts")
    one_runs: list[Run] = []
    many_runs: list[Run] = []
    for _ in range(reps):
        one_runs.append(run_flow(services, "refresh", params(1)))
        one.samples.append(one_runs[-1].seconds)
        bash_one.samples.append(run_bash(services, script, bash_env(1)).seconds)
        run = run_flow(services, "refresh", params(hosts))
        if run.result.get("hosts") != hosts:
            raise BenchError(f"refresh of {hosts} hosts recapped {run.result.get('hosts')}")
        many.samples.append(run.seconds)
        many_runs.append(run)
        bash_many.samples.append(run_bash(services, script, bash_env(hosts)).seconds)
    report.phases += ["### Where the time goes: refresh-servers", ""]
    report.phases += _phase_table("1 host", one_runs)
    report.phases += _phase_table(f"{hosts} hosts", many_runs)
    report.ratios.append(Ratio("4 refresh-servers", "flow / bash, 1 host", one, bash_one, 1.10))
    report.ratios.append(Ratio("4 refresh-servers", f"flow / bash, {hosts} hosts", many, bash_many, 1.10))
    report.ratios.append(Ratio("4 refresh-servers", f"{hosts} hosts / 1 host", many, one, 2.0))
    report.notes.append(
        "4: hosts are local-connection inventory aliases (each its own target_root) running the baseline "
        "play (base-packages check, sshd drop-in): Ansible forks a worker per host as it would for SSH "
        "hosts; no SSH handshake is measured."
    )


# --- 5: release, second (warm) vs first (cold) ------------------------------------------------------


def compare_release(services: Services, report: Report, reps: int, quick: bool) -> None:
    import docker

    from tools import docker_engine as engine

    client = docker.DockerClient(base_url=services.env["DOCKER_HOST"], timeout=300)
    builder = f"devops-flows/sbt-builder:bench-{services.run_id}"
    engine.build_image(
        client,
        INFRA_DIR / "apps" / "builder",
        "Dockerfile",
        [builder],
        buildargs={"BASE_IMAGE": services.env["DEVOPS_BASE_IMAGE"]},
    )
    registry = services.env["DEVOPS_REGISTRY"]
    cold = report.figure("5 release", "first release (cold: no image, no cache volume)")
    warm = report.figure("5 release", "second release, app unchanged (layer + ivy cache)")
    from devenv.processes import free_port

    cold_runs: list[Run] = []
    warm_runs: list[Run] = []
    try:
        for _ in range(reps):
            name = f"bench-hh-{uuid.uuid4().hex[:8]}"
            cache = f"bench-cache-{uuid.uuid4().hex[:8]}"
            app = services.home / name
            shutil.copytree(INFRA_DIR / "apps" / "hire-help", app)
            _remove_bench_images(client, registry)  # cold: no earlier layers to reuse
            port = free_port()
            params = {
                "params": {
                    "app_path": str(app),
                    "app_name": name,
                    "environment": "dev",
                    "build": {"builder_image": builder, "cache_volume": cache, "timeout_seconds": 300},
                    "publish": {
                        "image_repository": f"bench/{name}",
                        "push_retries": 1,
                        "retry_delay_seconds": 0.5,
                    },
                    "deploy": {
                        "ports": [{"container_port": 10000, "host_port": port, "host_ip": "127.0.0.1"}],
                        "health": {"url": f"http://127.0.0.1:{port}/health", "timeout_seconds": 90},
                    },
                    "labels": {BENCH_LABEL: "1"},
                }
            }
            cold_runs.append(run_flow(services, "release", params))
            cold.samples.append(cold_runs[-1].seconds)
            warm_runs.append(run_flow(services, "release", params))
            warm.samples.append(warm_runs[-1].seconds)
            _remove_containers(client)
            for suffix in ("ivy2", "coursier"):
                try:
                    client.volumes.get(f"{cache}-{suffix}").remove(force=True)
                except docker.errors.NotFound:
                    pass
    finally:
        _remove_containers(client)
        _remove_bench_images(client, registry)
        try:
            client.images.remove(builder, force=True)
        except docker.errors.APIError:
            pass
        client.close()
    report.ratios.append(Ratio("5 release", "second / first", warm, cold, 0.35))
    report.phases += ["### Where the time goes: release", ""]
    report.phases += _phase_table("First release (cold)", cold_runs)
    report.phases += _phase_table("Second release (warm)", warm_runs)
    report.notes.append(
        "5: the builder is the stand-in sbt image (busybox + mkzip; no real sbt offline), so 'ivy cache' "
        "saves nothing measurable and the second release builds again; its image build hits the layer "
        "cache through to the same image (the created label is the commit time, not the build time), the "
        "push finds every layer in the registry, and deploy-app leaves the container that already runs "
        "that image with that configuration (no replace, health already known)."
    )


def _remove_containers(client) -> None:  # noqa: ANN001
    for container in client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}=1"}):
        container.remove(force=True)


def _remove_bench_images(client, registry: str) -> None:  # noqa: ANN001
    for image in client.api.images():  # no inspect of each: other users of the engine remove theirs
        names = [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]  # deploys pull by digest
        if any(t.startswith((f"{registry}/bench/", "bench/")) for t in names):
            try:
                client.images.remove(image["Id"], force=True)
            except Exception:  # noqa: BLE001, S110 - in use by a container being removed: next time
                pass


# --- 6: memory of the serve process ---------------------------------------------------------------


def _tree_rss(root: int) -> tuple[int, int]:
    """(RSS of `root`, RSS of root + all descendants) in bytes, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return rss.get(root, 0), total


class Sampler(threading.Thread):
    def __init__(self, pid: int, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak_own = self.peak_tree = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            own, tree = _tree_rss(self.pid)
            self.peak_own, self.peak_tree = max(self.peak_own, own), max(self.peak_tree, tree)
            self.stop_event.wait(self.period)

    def finish(self) -> tuple[float, float]:
        self.stop_event.set()
        self.join()
        return self.peak_own / 2**20, self.peak_tree / 2**20


def compare_memory(services: Services, report: Report, reps: int, quick: bool) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from deployments.declarations import load
    from devenv.processes import pid_alive, stop_pid

    declared = load().deployments
    pid = services.spawn(
        [sys.executable, "-m", "deployments.serve"],
        f"serve-{uuid.uuid4().hex[:4]}",
        env={"PREFECT_RUNNER_POLL_FREQUENCY": "2"},
    )
    idle_own = report.figure("6 serve memory", "serve process, idle (peak RSS)", unit="MiB")
    idle_tree = report.figure("6 serve memory", "serve + children, idle (peak RSS)", unit="MiB")
    busy_own = report.figure("6 serve memory", "serve process, during a rollout (peak RSS)", unit="MiB")
    busy_tree = report.figure("6 serve memory", "serve + children, during a rollout (peak RSS)", unit="MiB")
    try:
        end = time.monotonic() + 180
        with get_client(sync_client=True) as client:
            while len(client.read_deployments()) < len(declared):
                if time.monotonic() > end or not pid_alive(pid):
                    raise BenchError("deployments.serve did not register its deployments; see its log")
                time.sleep(1)
        time.sleep(2)
        rollout = next(d for d in declared if d.entrypoint.endswith(":ami_rollout"))
        memory_backend = services.backend("mem")
        for _ in range(reps):
            sampler = Sampler(pid)
            sampler.start()
            time.sleep(3 if quick else 10)
            own, tree = sampler.finish()
            idle_own.samples.append(own)
            idle_tree.samples.append(tree)
            sampler = Sampler(pid)
            sampler.start()
            run = run_deployment(
                f"ami-rollout/{rollout.name}",
                parameters={
                    "request": {
                        "bake": {"host": "xwiki", "environment": tag("mem")},
                        "stack": STACK,
                        "variables": {"name": f"bench-mem-{services.run_id}"},
                    },
                    "backend_block": memory_backend,
                },
                timeout=600,
            )
            own, tree = sampler.finish()
            if not run.state or not run.state.is_completed():
                report.errors.append(
                    f"6: the served ami-rollout run ended {run.state and run.state.name}: "
                    f"{run.state and run.state.message}"
                )
            busy_own.samples.append(own)
            busy_tree.samples.append(tree)
    finally:
        stop_pid(pid, "deployments.serve", seconds=20)
    report.notes.append(
        f"6: `python -m deployments.serve` ({len(declared)} deployments) on the bench's Prefect server, RSS "
        "sampled every 0.2 s from /proc (the process and all its descendants: each served run is a child "
        "process, with Packer/Terraform under it); runner poll frequency 2 s."
    )


# --- main --------------------------------------------------------------------------------------------


def compare_startup(services: Services, report: Report, reps: int, quick: bool) -> None:
    from bench.startup import compare_startup as compare

    compare(services, report, reps, quick)


RUNNERS: dict[str, Callable[[Services, Report, int, bool], None]] = {
    "rollout": compare_rollout,
    "fanout": compare_fanout,
    "refresh": compare_refresh,
    "release": compare_release,
    "memory": compare_memory,
    "startup": compare_startup,
}


def render(report: Report, info: list[str], args: argparse.Namespace, seconds: float) -> str:
    mode = (
        "quick (1 repetition, smallest sizes: proves it runs, times not meaningful)"
        if args.quick
        else (f"{args.reps} repetitions")
    )
    parts = [
        "## Benchmark: devops-flows vs plain bash",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {mode}, "
        f"{seconds / 60:.1f} min in all. Reproduce: `scripts/bench` (or `scripts/bench --quick`).",
        "",
        "Machine:",
        "",
        *info,
        "",
        table(report),
        "",
    ]
    if report.errors:
        parts += ["Errors:", "", *[f"- {e}" for e in report.errors], ""]
    if report.notes:
        parts += ["Notes:", "", *[f"- {n}" for n in report.notes], ""]
    parts += report.phases
    return "\n".join(parts)


def _profile(out_dir: Path, database: str) -> int:
    services = Services(database=database)
    try:
        print(f"[bench] profiling ami-rollout (private services under {services.home})", flush=True)
        services.start()
        reports = profile_rollout(services, out_dir)
    finally:
        services.stop()
    for report in reports:
        print(f"[bench] pyinstrument report: {report}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 repetition, smallest sizes (CI)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per figure (default 5)")
    parser.add_argument("--only", default=",".join(COMPARISONS), help="comma-separated subset")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.md")
    parser.add_argument(
        "--database",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="the Prefect server's database (default postgres, as in production)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="no figures: profile a full and a no-change ami-rollout with pyinstrument (bench/results/)",
    )
    args = parser.parse_args(argv)
    if args.profile:
        return _profile(args.output.parent, args.database)
    if args.quick:
        args.reps = 1
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in RUNNERS]
    if unknown or not chosen or args.reps < 1:
        parser.error(f"--only takes {', '.join(COMPARISONS)}; --reps >= 1")
    started = time.monotonic()
    services = Services(database=args.database)
    report = Report()
    try:
        print(
            f"[bench] starting private moto + Prefect server ({args.database}) under {services.home}",
            flush=True,
        )
        services.start()
        info = [*machine(), f"- Prefect server database: {args.database} (`--database`)"]
        for name in chosen:
            print(f"[bench] {name} ({args.reps} repetition(s))", flush=True)
            t0 = time.monotonic()
            try:
                RUNNERS[name](services, report, args.reps, args.quick)
            except Exception as exc:  # noqa: BLE001 - report it, carry on with the next comparison
                report.errors.append(f"{name}: {type(exc).__name__}: {str(exc)[-1500:]}")
                print(f"[bench] {name} failed: {exc}", flush=True)
            print(f"[bench] {name} done in {time.monotonic() - t0:.0f}s", flush=True)
    finally:
        services.stop()
    text = render(report, info, args, time.monotonic() - started)
    print("\n" + text, flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(f"[bench] written to {args.output}", flush=True)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
