"""Packer 1.6.6 for real: `packer version`, and a shell provisioner run by Packer's docker builder
against the sandbox's engine (DOCKER_HOST from the sandbox env reaches packer through the environment)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tools import packer

pytestmark = pytest.mark.integration


def test_packer_version_runs():
    out = subprocess.run(["packer", "version"], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.startswith("Packer v1."), out.stdout


def test_a_shell_provisioner_runs_in_the_docker_builder(sandbox_env, docker_client, workdir):
    marker = uuid.uuid4().hex
    template = {
        "variables": {"marker": ""},
        "builders": [
            {
                "type": "docker",
                "image": sandbox_env["DEVOPS_BASE_IMAGE"],
                "pull": False,
                "commit": True,
                "fix_upload_owner": False,  # it runs `chown` as user root: busybox has no /etc/passwd
                "run_command": ["-d", "-i", "-t", "--entrypoint=/bin/sh", "--", "{{.Image}}"],
            }
        ],
        "provisioners": [
            {
                "type": "shell",
                "remote_folder": "/",  # FROM scratch + busybox: no /tmp
                "start_retry_timeout": "30s",  # a failing upload fails the build instead of retrying 5 min
                "inline": ["echo {{user `marker`}} > /baked.txt"],
            }
        ],
    }
    path = workdir / "docker.json"
    path.write_text(json.dumps(template))
    out = packer.build({"marker": marker}, template=path, base=workdir, timeout=180)
    assert [a.builder for a in out.artifacts] == ["docker"]
    image = out.artifacts[0].id
    assert image.startswith("sha256:"), out.artifacts
    try:
        printed = docker_client.containers.run(image, ["cat", "/baked.txt"], entrypoint="", remove=True)
        assert printed.decode().strip() == marker
    finally:
        docker_client.images.remove(image, force=True)
