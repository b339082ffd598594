"""The local sandbox of real components: `python -m devenv.sandbox up|down|status|env`.

up      idempotent. Reuses a reachable Docker engine (DOCKER_HOST or the default socket) or starts one;
        builds the busybox base image; starts an htpasswd-protected registry on 127.0.0.1 and moto's
        AWS server on 127.0.0.1; writes a Terraform CLI config (provider mirror when the machine has
        one); checks Packer, Terraform and Ansible versions; writes endpoints and credentials to
        `<state>/env` (0600). A second `up` reuses whatever is healthy.
down    stops only what `up` started (recorded in `<state>/sandbox.json`).
status  one line per component, exit 1 when one is unhealthy.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

from devenv.demo_secrets import ensure_demo_secrets
from devenv.dockerd import BASE_IMAGE, docker_ping, ensure_base_image, ensure_docker
from devenv.processes import free_port, http_status, log, pid_alive, port_free, stop_pid
from devenv.sandbox_state import State
from devenv.services import start_moto, start_registry
from devenv.toolchain import check_tools, ensure_terraform_config, venv_bin
from tools.errors import ToolError, ToolMissing
from tools.settings import load_env, state_dir, write_env

REGISTRY_USER = "devops"
REGION = "eu-central-1"
STATE_BUCKET = "devops-flows-tfstate"
DEFAULT_PORTS = {"registry": 5000, "moto": 4566}
PREFECT_USER = "admin"


def _pick_port(comp: dict, name: str) -> int:
    port = comp.get("port") or DEFAULT_PORTS[name]
    return port if port_free(port) else free_port()


def ensure_registry(state: State, env: dict[str, str]) -> None:
    comp = state.component("registry")
    password = env.get("DEVOPS_REGISTRY_PASSWORD") or secrets.token_urlsafe(18)
    port = comp.get("port")
    if (
        comp.get("started")
        and pid_alive(comp.get("pid"))
        and http_status(f"http://127.0.0.1:{port}/v2/") == 401
    ):
        log(f"registry: reusing 127.0.0.1:{port}")
    else:
        port = _pick_port(comp, "registry")
        root, logfile = state_dir() / "registry", state_dir() / "logs" / "registry.log"
        pid = start_registry(root, port, REGISTRY_USER, password, logfile)
        comp.update(started=True, pid=pid, port=port)
        state.save()
        log(f"registry: started on 127.0.0.1:{port} (htpasswd auth)")
    env.update(
        DEVOPS_REGISTRY=f"127.0.0.1:{port}",
        DEVOPS_REGISTRY_USER=REGISTRY_USER,
        DEVOPS_REGISTRY_PASSWORD=password,
    )


def ensure_moto(state: State, env: dict[str, str]) -> None:
    comp = state.component("moto")
    port = comp.get("port")
    if (
        comp.get("started")
        and pid_alive(comp.get("pid"))
        and http_status(f"http://127.0.0.1:{port}/moto-api/") == 200
    ):
        log(f"moto: reusing 127.0.0.1:{port}")
    else:
        if not venv_bin("moto_server"):
            raise ToolMissing("moto_server is not installed", hint="pip install 'moto[server]'")
        port = _pick_port(comp, "moto")
        pid = start_moto(port, state_dir() / "logs" / "moto.log")
        comp.update(started=True, pid=pid, port=port)
        state.save()
        log(f"moto: started on 127.0.0.1:{port}")
    endpoint = f"http://127.0.0.1:{port}"
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        DEVOPS_TF_STATE_BUCKET=STATE_BUCKET,
    )
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if STATE_BUCKET not in names:
        s3.create_bucket(Bucket=STATE_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})


# ---------------------------------------------------------------- commands


def up() -> dict[str, str]:
    started = time.monotonic()
    state = State.load()
    env = load_env()
    versions = check_tools()
    host = ensure_docker(state)
    env["DOCKER_HOST"] = host
    ensure_base_image(host)
    env["DEVOPS_BASE_IMAGE"] = BASE_IMAGE
    ensure_registry(state, env)
    ensure_moto(state, env)
    ensure_terraform_config(env)
    env["DEVOPS_SANDBOX"] = "1"
    # Basic auth of the local Prefect servers (main job, scale-out demo): generated here, never committed.
    env.setdefault("DEVOPS_PREFECT_AUTH", f"{PREFECT_USER}:{secrets.token_urlsafe(18)}")
    ensure_demo_secrets(env)
    write_env(env)
    state.component("versions").update(versions)
    state.save()
    log(f"tools: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    log(f"up in {time.monotonic() - started:.1f}s; endpoints and credentials in {state_dir() / 'env'}")
    return env


def down() -> None:
    state = State.load()
    for name in ("moto", "registry", "docker"):
        comp = state.data.get(name, {})
        if comp.get("started") and comp.get("pid"):
            log(f"{name}: stopping pid {comp['pid']}")
            stop_pid(comp["pid"], name, seconds=30 if name == "docker" else 10)
            comp.update(started=False, pid=None)
        elif comp:
            log(f"{name}: not started by the sandbox; left alone")
    state.save()


def status() -> bool:
    state = State.load()
    env = load_env()
    healthy = True
    checks = {
        "docker": lambda: docker_ping(env.get("DOCKER_HOST", "")),
        "registry": lambda: http_status(f"http://{env.get('DEVOPS_REGISTRY')}/v2/") == 401,
        "moto": lambda: http_status(f"{env.get('AWS_ENDPOINT_URL')}/moto-api/") == 200,
        "terraform-config": lambda: Path(env.get("TF_CLI_CONFIG_FILE", "/nonexistent")).exists(),
    }
    for name, check in checks.items():
        ok = bool(env) and check()
        healthy &= ok
        started = state.data.get(name, {}).get("started")
        owner = "started by sandbox" if started else ("reused" if name in state.data else "")
        print(f"{name:17} {'healthy' if ok else 'DOWN':8} {owner}")
    return healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "status":
            return 0 if status() else 1
        else:
            print(state_dir() / "env")
    except ToolError as exc:
        print(f"[sandbox] error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
