"""Terraform against moto with S3 state: apply + destroy a tiny stack, plan summaries, a held state lock."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest

from blocks import AWS_BLOCK, TerraformBackend
from tasks.terraform import apply_plan, plan_now
from tasks.terraform_destroy import destroy_now
from tests.blocks import save_backend
from tools import terraform as tf
from tools.errors import InvalidInput, StateLocked
from tools.identity import ProcessRef, this_host

pytestmark = pytest.mark.integration
SMOKE = "sandbox/smoke"


@pytest.fixture
def backend_block(blocks, sandbox_env) -> str:
    """A TerraformBackend block with a unique key prefix: every test has its own state."""
    name = f"tf-backend-test-{uuid.uuid4().hex[:8]}"
    return save_backend(sandbox_env, name, f"tests/{name}/", lock_timeout_seconds=3)


def test_terraform_version_is_supported():
    out = subprocess.run(["terraform", "version", "-json"], capture_output=True, text=True, check=True)
    assert '"terraform_version": "1.' in out.stdout


def test_unknown_stack_and_variable_are_rejected_before_anything_runs():
    with pytest.raises(InvalidInput, match="valid stacks"):
        tf.resolve_stack("../etc")
    with pytest.raises(InvalidInput, match="scalac/internal-prod/xwiki"):
        tf.resolve_stack("scalac/nope")
    with pytest.raises(InvalidInput, match="not declared"):
        tf.prepare_workspace(SMOKE, {"nope": "1"}, "k")


def test_apply_and_destroy_a_tiny_stack_with_s3_state(backend_block, sandbox_env):
    """plan/apply/destroy with S3 state, and apply-stack's converged fast path: the same inputs again run
    no Terraform at all, until the state is written by anyone else (then it plans, and converges)."""
    import boto3

    from flows.apply import StackRequest, apply_stack

    name = f"devops-flows-smoke-{uuid.uuid4().hex[:8]}"
    variables = {"name": name}
    first = plan_now(SMOKE, variables, backend_block, AWS_BLOCK)
    assert first.has_changes and first.add == 1 and first.workspace is None
    assert first.resource("aws_security_group.smoke").action == "create"
    request = StackRequest(stack=SMOKE, variables=variables)
    applied = apply_stack(request, backend_block, AWS_BLOCK)
    assert applied.applied and applied.reason == "applied"
    sg_id = applied.result.value("security_group_id")
    ec2 = boto3.client("ec2", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    assert ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]["GroupName"] == name

    s3 = boto3.client("s3", endpoint_url=sandbox_env["AWS_ENDPOINT_URL"])
    backend = TerraformBackend.load(backend_block)
    key = f"{backend.key_prefix}{SMOKE}/terraform.tfstate"
    assert s3.head_object(Bucket=backend.bucket, Key=key)["ContentLength"] > 0
    record = json.loads(s3.get_object(Bucket=backend.bucket, Key=key + ".converged.json")["Body"].read())
    assert record["serial"] >= 1 and len(record["fingerprint"]) == 64

    same = apply_stack(request, backend_block, AWS_BLOCK)  # same inputs, state untouched: no Terraform
    assert not same.applied and same.reason == "converged"
    assert same.result.value("security_group_id") == sg_id

    again = plan_now(SMOKE, variables, backend_block, AWS_BLOCK)  # and a real plan agrees
    assert not again.has_changes and again.workspace is None
    assert "No changes" in again.markdown()

    # Someone applies a change outside apply-stack (no record written): the state's serial moves on
    edited = {**variables, "description": "changed"}
    changed = plan_now(SMOKE, edited, backend_block, AWS_BLOCK, keep_plan=True)
    assert changed.add == 1 and changed.destroy == 1
    attr = {c.name: c for c in changed.resource("aws_security_group.smoke").changed}["description"]
    assert (attr.old, attr.new) == ("devops-flows smoke test", "changed")
    assert "`description`: `devops-flows smoke test` -> `changed`" in changed.markdown()
    apply_plan.fn(changed, backend_block, AWS_BLOCK)
    back = apply_stack(request, backend_block, AWS_BLOCK)  # the record no longer matches: it plans
    assert back.applied and back.plan.add == 1 and back.plan.destroy == 1
    sg_id = back.result.value("security_group_id")
    group = ec2.describe_security_groups(GroupIds=[sg_id])["SecurityGroups"][0]
    assert group["Description"] == "devops-flows smoke test"

    destroy_now(SMOKE, variables, backend_block, AWS_BLOCK)
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == name]


def test_a_lock_held_by_another_terraform_gives_state_locked(backend_block, sandbox_env, workdir):
    """A real holder: an interactive `terraform apply` waiting at its approval prompt holds the lock."""
    name = f"devops-flows-lock-{uuid.uuid4().hex[:8]}"
    backend = TerraformBackend.load(backend_block)
    holder_ws = tf.prepare_workspace(SMOKE, {"name": name}, f"{backend.key_prefix}{SMOKE}/terraform.tfstate")
    env = {
        **os.environ,
        "TF_VAR_aws_endpoint": sandbox_env["AWS_ENDPOINT_URL"],
        "TF_IN_AUTOMATION": "1",
        **tf.cli_env(),
    }
    config = tf.backend_config(backend.bucket, holder_ws.state_key, backend.region, backend.endpoint_url)
    init = tf.command("init", input=False, backend_config=config)
    subprocess.run(init, cwd=holder_ws.path, env=env, check=True, capture_output=True)
    log = open(workdir / "holder.log", "w+")  # noqa: SIM115
    holder = subprocess.Popen(  # a real Terraform holding the lock at its "Enter a value:" prompt
        [
            *tf.command("apply", var_file=tf.VAR_FILE),
        ],
        cwd=holder_ws.path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "Enter a value" not in (workdir / "holder.log").read_text():
            assert holder.poll() is None, (workdir / "holder.log").read_text()
            assert time.monotonic() < deadline, "the holder never reached its prompt"
            time.sleep(0.5)
        with pytest.raises(StateLocked) as caught:
            plan_now(SMOKE, {"name": name}, backend_block, AWS_BLOCK)
        err = caught.value
        assert "held by" in str(err) and "OperationTypeApply" in str(err)
        assert err.hint and "force-unlock" in err.hint
    finally:
        holder.communicate("no\n", timeout=60)
        tf.remove_workspace(holder_ws)
    # the holder said no: nothing was applied and the lock is released; the state is intact
    summary = plan_now(SMOKE, {"name": name}, backend_block, AWS_BLOCK)
    assert summary.has_changes and summary.add == 1


def test_a_lock_of_a_live_terraform_on_this_host_is_not_stale(workdir):
    """A real terraform process working in a directory of the stack keeps its lock (unless it works on a
    different state key, read from its .terraform/terraform.tfstate)."""
    stack_dir = workdir / "terraform" / "x" / "live-stack"
    stack_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    now = datetime.now(UTC)
    lock = tf.LockInfo(id="1", who=tf.this_holder(), created=now.isoformat())
    holder = tf.HolderRecord(process=ProcessRef(identity=this_host(), pid=dead.pid), started=now)
    proc = subprocess.Popen(
        ["terraform", "console"],
        cwd=stack_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **tf.cli_env()},
    )
    try:
        deadline = time.monotonic() + 60
        while not tf.live_terraform_processes("x/live-stack"):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert tf.stale_lock_reason(lock, holder, "x/live-stack", "k") is None
        (stack_dir / ".terraform").mkdir()
        backend = '{"backend": {"config": {"key": "other"}}}'
        (stack_dir / ".terraform" / "terraform.tfstate").write_text(backend)
        assert tf.stale_lock_reason(lock, holder, "x/live-stack", "k")  # a live process, but on another state
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert "holder is dead" in tf.stale_lock_reason(lock, holder, "x/live-stack", "k")


def test_concurrent_inits_and_plans_share_no_writable_provider_directory(sandbox_env, workdir):
    """Terraform's plugin cache is not safe for concurrent use: a fresh init re-installs the provider into it
    while another run's command reads it ("could not read package directory", seen in CI). With the
    machine's provider mirror the sandbox config has no cache: every working directory links the read-only
    mirror, so inits and validates at once in six directories all succeed."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from tools.terraform_runner import cli_env

    env = {**os.environ, **cli_env(), "TF_IN_AUTOMATION": "1"}
    config = Path(env["TF_CLI_CONFIG_FILE"]).read_text()
    if "filesystem_mirror" not in config:
        pytest.skip("no provider mirror on this machine: providers download into a cache")
    assert "plugin_cache_dir" not in config and "TF_PLUGIN_CACHE_DIR" not in env
    mirror = Path(config.split('path    = "')[1].split('"')[0])
    source = tf.resolve_stack(SMOKE)

    def init_and_validate(index: int) -> Path:
        here = workdir / f"copy-{index}"
        subprocess.run(["cp", "-r", str(source), str(here)], check=True)
        for argv in (["init", "-backend=false", "-input=false", "-no-color"], ["validate", "-no-color"]):
            done = subprocess.run(["terraform", *argv], cwd=here, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        return here

    with ThreadPoolExecutor(6) as pool:
        copies = list(pool.map(init_and_validate, range(6)))
    for here in copies:
        (provider,) = (here / ".terraform" / "providers").glob("registry.terraform.io/hashicorp/aws/*/*")
        assert provider.is_symlink(), f"{provider} was copied, not linked to the mirror"
        assert provider.resolve().is_relative_to(mirror), provider.resolve()
