"""The main job on the embedded local defaults: `scripts/main` (start) and `scripts/main stop`.

start: a Prefect server with its UI on 127.0.0.1:4200 (SQLite under the sandbox state directory), the
blocks, work pool, limits and notification automation (deployments.setup), every deployment of
prefect.yaml served on its schedule from one process (deployments.serve), and one first run of the
xwiki AMI rollout and of the server refresh so the UI has something to show.
stop: stops what start started (server, serve process); the sandbox is stopped by scripts/main stop too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from devenv.processes import pid_alive, spawn, stop_pid
from devenv.services import prefect_healthy, start_prefect_server
from tools.errors import ToolError
from tools.settings import REPO_ROOT, apply_env, load_env, public_env, state_dir

HOST, PORT = "127.0.0.1", int(os.environ.get("DEVOPS_PREFECT_PORT", "4200"))
API = f"http://{HOST}:{PORT}/api"
FIRST_RUNS = ["ami-rollout/devops-packer-xwiki", "refresh-servers/devops-refresh-servers"]


def healthy() -> bool:
    return prefect_healthy(API, os.environ.get("PREFECT_API_AUTH_STRING"))


def pidfile(name: str):  # noqa: ANN201
    return state_dir() / f"{name}.pid"


def start_server() -> None:
    if healthy():
        print(f"[main] Prefect server already answering on {API}")
        return
    home = state_dir() / "prefect"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)  # its SQLite database holds every run's parameters and logs
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": API,
        "PREFECT_SERVER_API_AUTH_STRING": os.environ["PREFECT_API_AUTH_STRING"],
    }
    logfile = state_dir() / "logs" / "prefect-server.log"
    try:
        pid = start_prefect_server(PORT, logfile, env=env, auth=os.environ["PREFECT_API_AUTH_STRING"])
    except ToolError as exc:
        raise SystemExit(f"[main] Prefect server did not start; see {logfile}") from exc
    pidfile("prefect-server").write_text(str(pid))
    print(f"[main] Prefect server started on {API}")


def start_serving() -> None:
    pid_path = pidfile("serve")
    if pid_path.exists() and pid_alive(int(pid_path.read_text())):
        print("[main] deployments already served")
        return
    log = state_dir() / "logs" / "serve.log"
    pid = spawn([sys.executable, "-m", "deployments.serve"], log)
    pid_path.write_text(str(pid))
    print(f"[main] serving every deployment of prefect.yaml (pid {pid}; log {log})")


def first_runs() -> None:
    from prefect.deployments import run_deployment

    for name in FIRST_RUNS:
        end = time.monotonic() + 120
        while True:
            try:
                run = run_deployment(name, timeout=0)
                print(f"[main] started {name}: http://{HOST}:{PORT}/runs/flow-run/{run.id}")
                break
            except Exception as exc:  # noqa: BLE001 - the served deployment registers asynchronously
                if time.monotonic() > end:
                    print(f"[main] could not start {name}: {exc}")
                    break
                time.sleep(1)


def start() -> int:
    sandbox = load_env()
    # The served flows find the sandbox's engine and Terraform config; its credentials stay out of the
    # environment (flows get them from blocks), except the Prefect client's own basic auth.
    apply_env(public_env(sandbox), override=True)
    os.environ["PREFECT_API_AUTH_STRING"] = sandbox["DEVOPS_PREFECT_AUTH"]
    os.environ["PREFECT_API_URL"] = API
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.chdir(REPO_ROOT)
    start_server()
    from deployments.setup import setup

    for key, value in setup().items():
        if key == "automation" and value is None:
            value = "none (set DEVOPS_ALERT_WEBHOOK_URL to get failure notifications)"
        print(f"[main] {key}: {value}")
    start_serving()
    first_runs()
    user = sandbox["DEVOPS_PREFECT_AUTH"].partition(":")[0]
    print(
        f"\n[main] Prefect UI: http://{HOST}:{PORT} (user {user}; the password is DEVOPS_PREFECT_AUTH in "
        f"{state_dir() / 'env'})\n[main] stop everything with: scripts/main stop"
    )
    return 0


def stop() -> int:
    for name in ("serve", "prefect-server"):
        path = pidfile(name)
        if path.exists():
            stop_pid(int(path.read_text()), name, seconds=20)
            path.unlink()
            print(f"[main] stopped {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/main", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="start", choices=["start", "stop"])
    return start() if parser.parse_args(argv).command == "start" else stop()


if __name__ == "__main__":
    sys.exit(main())
