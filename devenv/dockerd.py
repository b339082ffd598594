"""The sandbox's Docker engine: a reachable one reused, or dockerd started (devenv.services); the busybox
base image every sandbox image builds from."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from devenv.processes import log, pid_alive, stop_pid, wait_until
from devenv.sandbox_state import State
from devenv.services import docker_ping, start_dockerd
from tools.errors import ToolError, ToolMissing
from tools.settings import state_dir

BASE_IMAGE = "devops-flows/busybox:1"

__all__ = ["BASE_IMAGE", "docker_ping", "ensure_base_image", "ensure_docker", "restart_docker"]


def ensure_docker(state: State) -> str:
    comp = state.component("docker")
    root = state_dir()
    ours = f"unix://{root / 'docker.sock'}"
    candidates = []
    if comp.get("started") and pid_alive(comp.get("pid")):
        candidates.append(ours)
    if os.environ.get("DOCKER_HOST"):
        candidates.append(os.environ["DOCKER_HOST"])
    candidates.append("unix:///var/run/docker.sock")
    for host in candidates:
        if docker_ping(host):
            if host != ours:
                comp.update(started=False, host=host, pid=None)
            log(f"docker: reusing the engine at {host}")
            return host
    pid, ours = start_dockerd(root, root / "logs" / "dockerd.log", say=log)
    comp.update(started=True, pid=pid, host=ours)
    state.save()
    wait_until(lambda: docker_ping(ours), 60, "dockerd")
    return ours


def restart_docker() -> str:
    """Stop the engine `up` started (containers stop with it) and start it again: a daemon restart.

    Containers with restart=always come back by themselves. Refuses to touch an engine it did not start."""
    state = State.load()
    comp = state.component("docker")
    if not comp.get("started"):
        raise ToolError("the Docker engine was not started by the sandbox; it is not ours to restart")
    stop_pid(comp["pid"], "docker", seconds=60)
    comp.update(started=False, pid=None)
    state.save()
    return ensure_docker(state)


def ensure_base_image(host: str) -> None:
    import docker

    client = docker.DockerClient(base_url=host, timeout=120)
    try:
        client.images.get(BASE_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    busybox = Path("/bin/busybox")
    if not busybox.exists() or not _is_static(busybox):
        raise ToolMissing(
            "a static busybox (/bin/busybox) is needed for the base image",
            hint="apt-get install busybox-static",
        )
    dockerfile = (
        b"FROM scratch\n"
        b"COPY busybox /bin/busybox\n"
        b'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        b'CMD ["sh"]\n'
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(str(busybox), arcname="busybox")
    buf.seek(0)
    log(f"docker: building {BASE_IMAGE} from static busybox")
    for event in client.api.build(fileobj=buf, custom_context=True, tag=BASE_IMAGE, rm=True, decode=True):
        if "error" in event:
            raise ToolError(f"building {BASE_IMAGE} failed: {event['error']}")
    client.close()


def _is_static(path: Path) -> bool:
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    return "not a dynamic executable" in (out.stdout + out.stderr)
