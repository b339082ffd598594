"""The local sandbox of real components: `python -m tools.sandbox up|down|status|env`.

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
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tools.errors import ToolError, ToolMissing
from tools.settings import INFRA_DIR, REPO_ROOT, load_env, state_dir, write_env

BASE_IMAGE = "devops-flows/busybox:1"
REGISTRY_USER = "devops"
REGION = "eu-central-1"
STATE_BUCKET = "devops-flows-tfstate"
DEFAULT_PORTS = {"registry": 5000, "moto": 4566}
MIN_VERSIONS = {"packer": (1, 6), "terraform": (1, 10), "ansible-core": (2, 15)}


PREFECT_USER = "admin"
# The example vaulted variables of the xwiki host (the article's host_vars/xwiki) and the vault password
# that protects them: generated once per checkout by `up` (every sandbox of this checkout shares them, as
# Ansible reads host_vars from the inventory's tree), gitignored, never committed or baked into an image.
VAULT_FILE = INFRA_DIR / "ansible" / "host_vars" / "xwiki" / "vault.yml"
VAULT_PASSWORD_FILE = INFRA_DIR / "ansible" / ".vault-password"
APP_SECRET_NAMES = ("PROJECT_DB_PASSWORD", "PROJECT_S3_ACCESS_KEY", "PROJECT_S3_SECRET_KEY")


def log(message: str) -> None:
    print(f"[sandbox] {message}", flush=True)


# ---------------------------------------------------------------- helpers


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_until(check, seconds: float, what: str) -> None:  # noqa: ANN001
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    raise ToolError(f"{what} did not become ready within {seconds:g}s")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def spawn(
    argv: list[str], logfile: Path, env: dict[str, str] | None = None, inherit: tuple[str, ...] | None = None
) -> int:
    """Start a long-running service detached from us (own session), output to `logfile`. Its environment
    is ours plus `env`, or with `inherit` only the variables of ours it names (`NAME` or `PREFIX*`)."""
    from tools.process import inherited_env

    logfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # logs may name endpoints, users
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv list
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**(os.environ if inherit is None else inherited_env(inherit)), **(env or {})},
        )
    return proc.pid


def stop_pid(pid: int, name: str, seconds: float = 15) -> None:
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        log(f"{name} ignored SIGTERM; killing it")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def version_of(argv: list[str], pattern: str = r"(\d+)\.(\d+)(?:\.(\d+))?") -> tuple[int, ...] | None:
    exe = shutil.which(argv[0])
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60).stdout  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, out)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def venv_bin(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


# ---------------------------------------------------------------- state


@dataclass
class State:
    path: Path
    data: dict

    @classmethod
    def load(cls) -> State:
        path = state_dir() / "sandbox.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True))

    def component(self, name: str) -> dict:
        return self.data.setdefault(name, {})


# ---------------------------------------------------------------- components


def docker_ping(host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        ok = bool(client.ping())
        client.close()
        return ok
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


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
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise ToolMissing(
            "no Docker engine is reachable and dockerd is not installed", hint="run scripts/setup"
        )
    if os.geteuid() != 0:
        raise ToolMissing(
            "no Docker engine is reachable; starting one needs root", hint="start Docker, or set DOCKER_HOST"
        )
    sock = root / "docker.sock"
    if len(str(sock)) > 100:
        raise ToolError(
            f"state directory path too long for a unix socket: {sock}", hint="set DEVOPS_SANDBOX_DIR"
        )
    for stale in (sock, root / "docker.pid"):
        stale.unlink(missing_ok=True)
    argv = [
        dockerd,
        "--data-root",
        str(root / "docker"),
        "--exec-root",
        str(root / "docker-exec"),
        "--pidfile",
        str(root / "docker.pid"),
        "-H",
        f"unix://{sock}",
        "--storage-driver",
        os.environ.get("DEVOPS_DOCKER_STORAGE_DRIVER", "overlay2"),
    ]
    log("docker: starting dockerd " + " ".join(argv[1:]))
    pid = spawn(argv, root / "logs" / "dockerd.log")
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
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True)  # noqa: S603
    return "not a dynamic executable" in (out.stdout + out.stderr)


def _pick_port(comp: dict, name: str) -> int:
    port = comp.get("port") or DEFAULT_PORTS[name]
    return port if port_free(port) else free_port()


def ensure_registry(state: State, env: dict[str, str]) -> None:
    comp = state.component("registry")
    root = state_dir() / "registry"
    password = env.get("DEVOPS_REGISTRY_PASSWORD") or secrets.token_urlsafe(18)
    port = comp.get("port")
    if (
        comp.get("started")
        and pid_alive(comp.get("pid"))
        and http_status(f"http://127.0.0.1:{port}/v2/") == 401
    ):
        log(f"registry: reusing 127.0.0.1:{port}")
    else:
        exe = shutil.which("docker-registry")
        if not exe:
            raise ToolMissing("docker-registry is not installed", hint="apt-get install docker-registry")
        port = _pick_port(comp, "registry")
        root.mkdir(parents=True, exist_ok=True)
        htpasswd = root / "htpasswd"
        line = _htpasswd_line(password)
        fd = os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(line + "\n")
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            "storage:\n  filesystem:\n    rootdirectory: "
            + str(root / "data")
            + "\n  delete:\n    enabled: true\n"
            "http:\n  addr: 127.0.0.1:" + str(port) + "\n  secret: " + secrets.token_hex(16) + "\n"
            "auth:\n  htpasswd:\n    realm: devops-flows\n    path: " + str(htpasswd) + "\n"
        )
        config.chmod(0o600)
        pid = spawn([exe, "serve", str(config)], state_dir() / "logs" / "registry.log")
        comp.update(started=True, pid=pid, port=port)
        state.save()
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/v2/") == 401, 30, "registry")
        log(f"registry: started on 127.0.0.1:{port} (htpasswd auth)")
    env.update(
        DEVOPS_REGISTRY=f"127.0.0.1:{port}",
        DEVOPS_REGISTRY_USER=REGISTRY_USER,
        DEVOPS_REGISTRY_PASSWORD=password,
    )


def _htpasswd_line(password: str) -> str:
    """bcrypt htpasswd line; the password goes to htpasswd on stdin, never on its command line."""
    exe = shutil.which("htpasswd")
    if not exe:
        raise ToolMissing("htpasswd is not installed", hint="apt-get install apache2-utils")
    out = subprocess.run(  # noqa: S603
        [exe, "-niB", REGISTRY_USER], input=password + "\n", capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


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
        exe = venv_bin("moto_server")
        if not exe:
            raise ToolMissing("moto_server is not installed", hint="pip install 'moto[server]'")
        port = _pick_port(comp, "moto")
        pid = spawn([exe, "-H", "127.0.0.1", "-p", str(port)], state_dir() / "logs" / "moto.log")
        comp.update(started=True, pid=pid, port=port)
        state.save()
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/moto-api/") == 200, 60, "moto_server")
        log(f"moto: started on 127.0.0.1:{port}")
    endpoint = f"http://127.0.0.1:{port}"
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S105 - moto accepts any key
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


def find_provider_mirror() -> Path | None:
    """A directory holding `registry.terraform.io/...` providers, discovered (not hard-coded)."""
    if os.environ.get("DEVOPS_TF_PROVIDER_MIRROR"):
        return Path(os.environ["DEVOPS_TF_PROVIDER_MIRROR"])
    roots = [
        Path.home() / ".terraform.d" / "plugins",
        Path("/usr/share/terraform/plugins"),
        Path("/usr/local/share/terraform/plugins"),
    ]
    for root in roots:
        if (root / "registry.terraform.io").is_dir():
            return root
    out = subprocess.run(  # noqa: S603
        [
            "find",
            "/",
            "-maxdepth",
            "4",
            "-type",
            "d",
            "-name",
            "registry.terraform.io",
            "-not",
            "-path",
            "/proc/*",
            "-not",
            "-path",
            str(state_dir()) + "/*",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in out.stdout.splitlines():
        candidate = Path(line).parent
        if any(candidate.glob("registry.terraform.io/hashicorp/*")):
            return candidate
    return None


def ensure_terraform_config(env: dict[str, str]) -> None:
    rc = state_dir() / "terraformrc"
    cache = state_dir() / "tf-plugin-cache"
    cache.mkdir(parents=True, exist_ok=True)
    mirror = find_provider_mirror()
    if mirror:
        body = (
            f'plugin_cache_dir = "{cache}"\n'
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
            '    include = ["registry.terraform.io/*/*"]\n  }\n'
            '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n'
            "}\n"
        )
        log(f"terraform: providers from the filesystem mirror at {mirror}")
    else:
        body = f'plugin_cache_dir = "{cache}"\n'
        log("terraform: no provider mirror on this machine; providers download from the registry")
    rc.write_text(body)
    env["TF_CLI_CONFIG_FILE"] = str(rc)
    env["TF_PLUGIN_CACHE_DIR"] = str(cache)


def check_tools() -> dict[str, str]:
    """Versions of the CLI tools, or ToolMissing with what to install."""
    found: dict[str, str] = {}
    checks = {
        "packer": (["packer", "version"], "apt-get install packer"),
        "terraform": (["terraform", "version"], "install Terraform >= 1.10"),
        "ansible-core": ([venv_bin("ansible") or "ansible", "--version"], "pip install 'ansible>=12,<13'"),
    }
    problems = []
    for name, (argv, how) in checks.items():
        version = version_of(argv)
        minimum = MIN_VERSIONS[name]
        if version is None:
            problems.append(f"{name} is missing ({how})")
        elif version[: len(minimum)] < minimum:
            problems.append(
                f"{name} {'.'.join(map(str, version))} is older than {'.'.join(map(str, minimum))} ({how})"
            )
        else:
            found[name] = ".".join(map(str, version))
    if problems:
        raise ToolMissing("; ".join(problems), hint="run scripts/setup")
    return found


def ensure_demo_secrets(env: dict[str, str]) -> None:
    """The demo's secrets, never committed: the Ansible vault password (VAULT_PASSWORD_FILE, 0600) and the
    xwiki database password it protects (vaulted into VAULT_FILE), made once per checkout; the sample
    app's secrets, made once per sandbox. All of them land in the sandbox's 0600 env file."""
    password = _read_or_create(VAULT_PASSWORD_FILE, secrets.token_urlsafe(18))
    env["DEVOPS_VAULT_PASSWORD"] = password
    from ansible.parsing.vault import VaultLib, VaultSecret  # the venv's Ansible, only when `up` runs

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    db_password = _vaulted_value(vault, VAULT_FILE)
    if db_password is None:
        db_password = secrets.token_urlsafe(18)
        body = "".join(f"  {line}\n" for line in vault.encrypt(db_password).decode().splitlines())
        VAULT_FILE.parent.mkdir(parents=True, exist_ok=True)
        partial = VAULT_FILE.with_name(f".{VAULT_FILE.name}.{os.getpid()}")
        partial.write_text(
            "# Written by `scripts/sandbox up` (gitignored): the demo's generated xwiki database password,\n"
            "# vaulted with the generated password in infra/ansible/.vault-password.\n"
            "xwiki_db_password: !vault |\n" + body
        )
        partial.replace(VAULT_FILE)
        log(f"demo secrets: vaulted a new xwiki database password into {VAULT_FILE.relative_to(REPO_ROOT)}")
    env["DEVOPS_SANDBOX_XWIKI_DB_PASSWORD"] = db_password
    if not env.get("DEVOPS_APP_SECRETS"):
        app = {name: secrets.token_urlsafe(18) for name in APP_SECRET_NAMES}
        env["DEVOPS_APP_SECRETS"] = json.dumps(
            {**app, "PROJECT_DB_NAME": "hire_help", "PROJECT_DB_USERNAME": "hire_help"}
        )


def _read_or_create(path: Path, value: str) -> str:
    """The file's stripped content; created 0600 with `value` first when missing (O_EXCL: two `up`s that
    race agree on the first writer's value)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _vaulted_value(vault, path: Path) -> str | None:  # noqa: ANN001 - ansible's VaultLib
    """The inline `!vault |` value of `path` decrypted with `vault`, or None (missing, other password)."""
    match = re.search(r"!vault \|\n((?:[ ]+\S+\n)+)", path.read_text()) if path.exists() else None
    if not match:
        return None
    try:
        return vault.decrypt("".join(line.strip() + "\n" for line in match[1].splitlines())).decode()
    except Exception:  # noqa: BLE001 - any decryption failure means: write it anew
        return None


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
