"""The secret scan on the failure paths (issue 15): a registry auth error, a failed build, a failed
Terraform apply. Failures are where tools print the most (their stderr goes into our errors) and where a
secret is most likely to slip into a message; each secret carries a random token, searched for in every
form a tool may print it (raw, base64, URL-encoded, JSON-escaped) in the run logs, state messages,
exceptions, and the environment of every tool process (each holds only the secrets meant for it).
The figures join the pipeline scan's at the end of CI.
"""

from __future__ import annotations

import base64
import json
import secrets as pysecrets
import shutil
import time
import urllib.parse
import uuid
from pathlib import Path

import boto3
import pytest
from prefect_docker import DockerRegistryCredentials

from blocks import AppSecrets
from flows.apply import StackRequest, apply_stack
from flows.release import build_app, publish_image
from tasks.release import BuildParams, PublishParams
from tasks.terraform_destroy import destroy_now
from tests.blocks import save_aws, save_backend
from tests.reliability.helpers import (
    PrivateRegistry,
    ProcSampler,
    logs_of,
    run_tree,
    task_run_states_of,
    tool_env_leaks,
)
from tests.reliability.test_secret_hygiene import FIGURES_DIR
from tools.settings import INFRA_DIR

pytestmark = pytest.mark.reliability
STACK = "scalac/internal-prod/xwiki"
# Terraform and Packer are the AWS key's tools; nothing else may hold any of these secrets.
MEANT_FOR = {"aws secret key": {"terraform", "packer"}}


def _secret(kind: str) -> tuple[str, str]:
    token = f"TOK{pysecrets.token_hex(6)}"
    return f"p@ss w0rd$'\"\\;|&-{kind}-{token}", token


def _forms(token: str) -> list[str]:
    return [
        token,
        base64.b64encode(token.encode()).decode().rstrip("="),
        urllib.parse.quote(token),
        json.dumps(token)[1:-1],
    ]


def test_no_secret_leaks_on_the_failure_paths(blocks, builder_image, sandbox_env, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    reg_pw, reg_tok = _secret("registry")
    wrong_pw, wrong_tok = _secret("wrong")
    app_pw, app_tok = _secret("app")
    aws_pw, aws_tok = _secret("aws")
    tokens = {
        "registry password": reg_tok,
        "wrong registry password": wrong_tok,
        "app secret": app_tok,
        "aws secret key": aws_tok,
    }
    registry = PrivateRegistry(user=f"relf{uid}", password=reg_pw).start()
    endpoint = sandbox_env["AWS_ENDPOINT_URL"]
    variables: dict[str, str] = {}
    try:
        DockerRegistryCredentials(
            registry_url=registry.address, username=registry.user, password=wrong_pw, reauth=True
        ).save(f"relf-registry-{uid}", overwrite=True)
        AppSecrets(values={"PROJECT_DB_PASSWORD": app_pw}).save(f"relf-app-{uid}", overwrite=True)
        save_aws(f"relf-aws-{uid}", endpoint, aws_pw)
        save_backend(sandbox_env, f"relf-backend-{uid}", f"relf/{uid}/", 10, endpoint)
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="eu-central-1")
        ami = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
        # A pinned launch template version that does not exist: the plan passes, the apply fails (AWS
        # rejects the auto scaling group), with the AWS key in Terraform's environment.
        variables = {"name": f"relf-{uid}", "ami_id": ami, "asg_launch_template_version": "999"}
        app = tmp_path / "hire-help"
        shutil.copytree(INFRA_DIR / "apps" / "hire-help", app)
        errors: dict[str, str] = {}
        run_ids: list = []
        with ProcSampler(interval=0.2) as sampler:
            state = build_app(
                BuildParams(
                    app_path=str(app),
                    builder_image=builder_image,
                    build_command=["sh", "-c", "echo building; echo 'sbt: compilation failed' >&2; exit 3"],
                    app_secrets_block=f"relf-app-{uid}",
                    cache_volume=f"relf-cache-{uid}",
                    timeout_seconds=120,
                ),
                return_state=True,
            )
            run_ids += run_tree(state.state_details.flow_run_id)
            errors["build failure"] = str(state.result(raise_on_failure=False))
            assert state.is_failed(), "the build was meant to fail"

            state = publish_image(
                PublishParams(
                    app_path=str(app),
                    image_repository=f"relf/{uid}",
                    registry_block=f"relf-registry-{uid}",
                    push_retries=0,
                ),
                return_state=True,
            )
            run_ids += run_tree(state.state_details.flow_run_id)
            errors["registry auth error"] = str(state.result(raise_on_failure=False))
            assert state.is_failed(), "the wrong password was meant to be refused"

            state = apply_stack(
                StackRequest(stack=STACK, variables=variables, skip_when_converged=False),
                f"relf-backend-{uid}",
                f"relf-aws-{uid}",
                return_state=True,
            )
            run_ids += run_tree(state.state_details.flow_run_id)
            errors["apply failure"] = str(state.result(raise_on_failure=False))
            assert state.is_failed(), "the apply was meant to fail"

        places: dict[str, str] = {f"argv of pid-sample {i}": " ".join(a) for i, a in enumerate(sampler.argvs)}
        places["flow and task run logs"] = "\n".join(logs_of(run_ids))
        places["run states, messages and parameters"] = "\n".join(task_run_states_of(run_ids))
        places.update({f"error of the {k}": v for k, v in errors.items()})
        found = [
            f"{what} in {where}"
            for where, text in places.items()
            for what, token in tokens.items()
            if any(form in text for form in _forms(token))
        ]
        env_places, env_leaks = tool_env_leaks(sampler.tool_environs, tokens, MEANT_FOR)
        places.update(env_places)
        found += env_leaks
        _write_figures(len(places), len(sampler.argvs), sorted(set(found)))
        assert "terraform" in sampler.tool_environs, "no terraform environment was sampled"
        assert any(aws_tok in e for e in sampler.tool_environs["terraform"]), (
            "the AWS key never reached terraform"
        )
        assert "exit 3" in errors["build failure"] or "failed" in errors["build failure"]
        assert found == [], "secrets leaked: " + "; ".join(sorted(set(found))[:20])
    finally:
        registry.stop()
        if variables:
            for _attempt in range(2):
                try:
                    destroy_now(
                        STACK,
                        {**variables, "asg_launch_template_version": "$Latest"},
                        f"relf-backend-{uid}",
                        f"relf-aws-{uid}",
                    )
                    break
                except Exception:  # noqa: BLE001 - best effort
                    time.sleep(2)


def _write_figures(places: int, argvs: int, found: list[str]) -> None:
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / "devops-flows-secret-scan-failures.json").write_text(
        json.dumps(
            {"places_scanned": places, "argv_samples": argvs, "occurrences": len(found), "where": found}
        )
    )
