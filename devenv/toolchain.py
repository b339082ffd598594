"""The CLI tools the flows drive (Packer, Terraform, Ansible): their versions checked, and Terraform's CLI
config written (the machine's provider mirror when it has one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from devenv.processes import log
from tools.errors import ToolMissing
from tools.settings import state_dir

MIN_VERSIONS = {"packer": (1, 6), "terraform": (1, 10), "ansible-core": (2, 15)}


def version_of(argv: list[str], pattern: str = r"(\d+)\.(\d+)(?:\.(\d+))?") -> tuple[int, ...] | None:
    exe = shutil.which(argv[0])
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, out)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def venv_bin(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


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
    out = subprocess.run(
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
            "/tmp/*",  # noqa: S108 - excluded, not used: scratch copies (working directories, caches) are not the machine's mirror
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
    """The sandbox's Terraform CLI config. With the machine's provider mirror: no plugin cache. Terraform
    links each working directory's provider straight to the unpacked, read-only mirror, so concurrent
    inits never write a shared directory (Terraform's plugin cache is not safe for concurrent use: an
    init without a lock file re-installs the provider into it while another run's plan reads it, which
    failed CI with "could not read package directory"). Without a mirror the providers download, into a
    cache."""
    rc = state_dir() / "terraformrc"
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    mirror = find_provider_mirror()
    if mirror:
        body = (
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
            '    include = ["registry.terraform.io/*/*"]\n  }\n'
            '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n'
            "}\n"
        )
        log(f"terraform: providers linked from the read-only filesystem mirror at {mirror}")
    else:
        cache = state_dir() / "tf-plugin-cache"
        cache.mkdir(parents=True, exist_ok=True)
        body = f'plugin_cache_dir = "{cache}"\n'
        env["TF_PLUGIN_CACHE_DIR"] = str(cache)
        log("terraform: no provider mirror on this machine; providers download from the registry")
    rc.write_text(body)
    env["TF_CLI_CONFIG_FILE"] = str(rc)
