"""The whole pipeline (release, ami-rollout, refresh-servers) with secrets full of shell and regex
metacharacters, while a sampler reads every process's cmdline and environ every 0.2 s; afterwards every
place a secret could leak to is scanned. Zero occurrences, or the test fails naming where.

Private blocks only: a private `docker-registry serve` (own htpasswd) for the registry password, a private
AppSecrets, a private AwsCredentials (moto accepts any secret key) and a private vault password, with a
copy of infra/ansible re-keyed to it (refresh-servers takes absolute playbook/inventory paths).
Each secret carries a random token, so a partial or re-encoded leak (JSON-escaped, shell-quoted) is found;
its base64 (also inside a larger blob) and URL-encoded forms are scanned for as well.
"""

from __future__ import annotations

import json
import os
import re
import secrets as pysecrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect_docker import DockerRegistryCredentials

from blocks import AppSecrets, AwsClientParameters, AwsCredentials, TerraformBackend
from flows.refresh import AnsibleTarget, refresh_servers
from flows.release import ReleaseParams, release
from flows.rollout import RolloutRequest, ami_rollout
from tasks.release import HealthCheck, PortMapping
from tasks.terraform import destroy_now
from tests.conftest import TEST_LABEL, free_port
from tests.reliability.helpers import (
    PrivateRegistry,
    ProcSampler,
    artifacts_of,
    logs_of,
    run_tree,
    task_run_states_of,
    tool_env_leaks,
)
from tools import docker_engine as engine
from tools.ansible import ANSIBLE_DIR, PDD_PREFIX
from tools.redact_forms import forms
from tools.settings import INFRA_DIR, state_dir

pytestmark = pytest.mark.reliability
META = "p@ss w0rd$'\"\\`;|&*.+?[(^{}"
STACK = "scalac/internal-prod/xwiki"
VAULTED_DB_PASSWORD = "xwiki-db-pass-8d41b7f2"  # the value vaulted in infra/ansible/host_vars/xwiki
FIGURES_DIR = Path(os.environ.get("DEVOPS_RELIABILITY_FIGURES", tempfile.gettempdir()))


def _secret(kind: str) -> tuple[str, str]:
    token = f"TOK{pysecrets.token_hex(6)}"
    return f"{META}{kind}-{token}", token


def _ansible_copy(workdir: Path, new_password: str) -> Path:
    """infra/ansible copied, its vaulted files re-keyed to `new_password` (password files deleted after)."""
    tree = workdir / "ansible"
    shutil.copytree(ANSIBLE_DIR, tree, ignore=shutil.ignore_patterns("sandbox-vault-password"))
    # host_vars/xwiki holds inline `!vault |` values: re-encrypt each with ansible's own VaultLib
    from ansible.parsing.vault import VaultLib, VaultSecret

    old = VaultLib(
        [("default", VaultSecret((ANSIBLE_DIR / "sandbox-vault-password").read_text().strip().encode()))]
    )
    new = VaultLib([("default", VaultSecret(new_password.encode()))])
    block = re.compile(r"!vault \|\n((?:[ ]+\S+\n)+)")
    for path in [p for p in tree.rglob("*") if p.is_file() and b"$ANSIBLE_VAULT" in p.read_bytes()]:

        def rekey(match: re.Match) -> str:
            lines = [line.strip() for line in match.group(1).splitlines()]
            plain = old.decrypt("\n".join(lines))
            body = new.encrypt(plain).decode()
            return "!vault |\n" + "".join(f"          {line}\n" for line in body.splitlines())

        path.write_text(block.sub(rekey, path.read_text()))
    return tree


def _encoded_forms(secrets: dict[str, str], tokens: dict[str, str]) -> dict[str, str]:
    """Each secret's encoded forms that do not already contain its token: base64 (std and urlsafe, padded
    or not, also the part of it inside a larger blob such as a docker config's `user:password` auth) and
    URL-encoded (quote, quote_plus); a JSON-escaped or shell-quoted copy still carries the plain token."""
    found = {}
    for name, value in secrets.items():
        encoded = [form for form in sorted(forms(value)) if tokens[name] not in form]
        for index, form in enumerate(encoded):
            found[f"{name} (encoded form {index}: {form[:8]}...)"] = form
    return found


def _scan(texts: dict[str, str], tokens: dict[str, str]) -> list[str]:
    return [
        f"{name} in {where}" for where, text in texts.items() for name, tok in tokens.items() if tok in text
    ]


def _walk(root: Path, skip_under: tuple[Path, ...]) -> Iterator[Path]:
    """Every file under root, skip_under pruned; a directory that vanishes meanwhile (the other test
    worker's temp dir) is skipped, not an error."""
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not any(Path(parent, d).is_relative_to(u) for u in skip_under)]
        for name in files:
            yield Path(parent, name)


def _files_since(
    roots: list[Path], since: float, skip: set[Path], skip_under: tuple[Path, ...] = ()
) -> dict[str, str]:
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else _walk(root, skip_under):
            try:
                if any(path.is_relative_to(under) for under in skip_under):
                    continue
                if not path.is_file() or path.is_symlink() or path in skip:
                    continue
                st = path.stat()
                if st.st_mtime < since or st.st_size > 4_000_000:
                    continue
                out[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
            except OSError:
                continue
    return out


def test_no_secret_reaches_argv_logs_artifacts_errors_or_disk(
    blocks,
    builder_image,
    docker_client,
    sandbox_env,
    workdir: Path,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.time() - 1
    # This test's own temporary directory (Ansible's private data dirs go there), so another xdist
    # worker's Ansible run in the shared /tmp is not taken for a leftover of ours.
    system_tmp = Path(tempfile.gettempdir())
    private_tmp = workdir / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    uid = uuid.uuid4().hex[:8]
    reg_pw, reg_tok = _secret("registry")
    app_pw, app_tok = _secret("app")
    aws_pw, aws_tok = _secret("aws")
    vault_pw, vault_tok = _secret("vault")
    tokens = {
        "registry password": reg_tok,
        "app secret": app_tok,
        "aws secret key": aws_tok,
        "vault password": vault_tok,
        "vaulted db password": VAULTED_DB_PASSWORD,
    }
    tokens.update(
        _encoded_forms(
            {
                "registry password": reg_pw,
                "app secret": app_pw,
                "aws secret key": aws_pw,
                "vault password": vault_pw,
                "vaulted db password": VAULTED_DB_PASSWORD,
            },
            tokens,
        )
    )

    registry = PrivateRegistry(user=f"rel{uid}", password=reg_pw).start()
    try:
        DockerRegistryCredentials(
            registry_url=registry.address, username=registry.user, password=reg_pw, reauth=True
        ).save(f"rel-registry-{uid}", overwrite=True)
        AppSecrets(values={"PROJECT_DB_PASSWORD": app_pw}).save(f"rel-app-{uid}", overwrite=True)
        AwsCredentials(
            aws_access_key_id="testing",
            aws_secret_access_key=aws_pw,
            region_name="eu-central-1",
            aws_client_parameters=AwsClientParameters(endpoint_url=sandbox_env["AWS_ENDPOINT_URL"]),
        ).save(f"rel-aws-{uid}", overwrite=True)
        Secret(value=vault_pw).save(f"rel-vault-{uid}", overwrite=True)
        TerraformBackend(
            bucket=sandbox_env["DEVOPS_TF_STATE_BUCKET"],
            region="eu-central-1",
            key_prefix=f"rel/{uid}/",
            endpoint_url=sandbox_env["AWS_ENDPOINT_URL"],
            lock_timeout_seconds=10,
        ).save(f"rel-backend-{uid}", overwrite=True)
        app = workdir / "hire-help"
        shutil.copytree(INFRA_DIR / "apps" / "hire-help", app)
        tree = _ansible_copy(workdir, vault_pw)
        port, xport = free_port(), free_port()
        name = f"rel-secret-{uid}"
        results: dict[str, str] = {}
        errors: dict[str, str] = {}
        run_ids: list = []

        with ProcSampler(interval=0.2) as sampler:
            state = release(
                ReleaseParams(
                    app_path=str(app),
                    app_name=name,
                    image_repository=f"rel/{uid}",
                    builder_image=builder_image,
                    cache_volume=f"rel-cache-{uid}",
                    build_timeout_seconds=300,
                    ports=[PortMapping(container_port=10000, host_port=port, host_ip="127.0.0.1")],
                    health=HealthCheck(url=f"http://127.0.0.1:{port}/health", timeout_seconds=90),
                    labels={TEST_LABEL: "1"},
                    registry_block=f"rel-registry-{uid}",
                    app_secrets_block=f"rel-app-{uid}",
                    push_retries=1,
                    retry_delay_seconds=0.5,
                ),
                return_state=True,
            )
            run_ids += run_tree(state.state_details.flow_run_id)
            (results if state.is_completed() else errors)["release"] = str(
                state.result(raise_on_failure=False)
            )

            request = RolloutRequest.model_validate(
                {
                    "bake": {"host": "xwiki", "environment": f"rel-{uid}"},
                    "stack": STACK,
                    "variables": {"name": f"rel-{uid}"},
                }
            )
            state = ami_rollout(request, f"rel-backend-{uid}", f"rel-aws-{uid}", return_state=True)
            run_ids += run_tree(state.state_details.flow_run_id)
            (results if state.is_completed() else errors)["ami-rollout"] = str(
                state.result(raise_on_failure=False)
            )

            target = AnsibleTarget(
                playbook=str(tree / "internal_hosts.yml"),
                inventory=str(tree / "inventory.ini"),
                limit="xwiki",
                extra_vars={
                    "xwiki_container_name": f"rel-xwiki-{uid}",
                    "xwiki_port": xport,
                    "xwiki_labels": {TEST_LABEL: "1"},
                    "target_root": str(workdir / "xwiki-root"),
                },
            )
            state = refresh_servers(target=target, vault_block=f"rel-vault-{uid}", return_state=True)
            run_ids += run_tree(state.state_details.flow_run_id)
            (results if state.is_completed() else errors)["refresh"] = str(
                state.result(raise_on_failure=False)
            )

        places: dict[str, str] = {f"argv of pid-sample {i}": " ".join(a) for i, a in enumerate(sampler.argvs)}
        places["flow and task run logs"] = "\n".join(logs_of(run_ids))
        places["artifacts"] = "\n".join(artifacts_of(run_ids))
        places["run states, messages and parameters"] = "\n".join(task_run_states_of(run_ids))
        places.update({f"result of {k}": v for k, v in results.items()})
        places.update({f"error of {k}": v for k, v in errors.items()})
        for path in engine.docker_config_paths():
            places[f"docker config {path}"] = path.read_text() if path.exists() else ""
        leftovers = [p for p in private_tmp.glob(f"{PDD_PREFIX}*")]
        prefect_home = Path(os.environ["PREFECT_HOME"])
        skip = set(prefect_home.glob("*.db*"))  # the block store: where secrets are meant to live
        # The Docker engine's own storage holds each container's configuration, env included: the
        # secrets are meant to reach the containers (like /proc/*/environ), so it is not a leak.
        engine_roots = (
            Path(docker_client.info()["DockerRootDir"]).resolve(),
            (state_dir() / "docker").resolve(),
            (state_dir() / "docker-exec").resolve(),
        )
        places.update(
            _files_since(
                [system_tmp, Path.home() / ".docker", workdir, *leftovers],
                started,
                skip,
                engine_roots,
            )
        )
        found = _scan(places, tokens)
        # Each tool's environment holds only its own secrets: the AWS key reaches Terraform and Packer,
        # nothing else reaches any tool (the vault password goes in a 0600 file, the rest through APIs).
        env_places, env_leaks = tool_env_leaks(
            sampler.tool_environs, tokens, {"aws secret key": {"terraform", "packer"}}
        )
        places.update(env_places)
        found += env_leaks
        _write_figures(len(places), len(sampler.argvs), found, errors)
        assert errors == {}, errors
        assert sampler.samples > 10 and sampler.environ_reads > 0
        # the secrets did reach where they must (else the test proves nothing)
        xwiki = docker_client.containers.get(f"rel-xwiki-{uid}")
        assert f"DB_PASSWORD={VAULTED_DB_PASSWORD}" in xwiki.attrs["Config"]["Env"], "vault not decrypted"
        assert f"PROJECT_DB_PASSWORD={app_pw}" in docker_client.containers.get(name).attrs["Config"]["Env"]

        assert found == [], "secrets leaked: " + "; ".join(found[:20])
        assert leftovers == [], f"ansible private data dirs left behind: {leftovers}"
    finally:
        registry.stop()
        try:
            destroy_now(
                STACK,
                {"name": f"rel-{uid}", "ami_id": "ami-00000000"},
                f"rel-backend-{uid}",
                f"rel-aws-{uid}",
            )
        except Exception:  # noqa: BLE001 - best effort
            pass
        for cname in (name if "name" in dir() else "", f"rel-xwiki-{uid}"):
            try:
                docker_client.containers.get(cname).remove(force=True)
            except Exception:  # noqa: BLE001 - absent is fine
                pass


def _write_figures(places: int, argvs: int, found: list[str], errors: dict[str, str]) -> None:
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / "devops-flows-secret-scan.json").write_text(
        json.dumps(
            {
                "places_scanned": places,
                "argv_samples": argvs,
                "occurrences": len(found),
                "where": found,
                "pipeline_errors": sorted(errors),
            },
            indent=2,
        )
    )
