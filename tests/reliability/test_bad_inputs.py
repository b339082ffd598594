"""Bad inputs through the real flows: each is rejected before any side effect, saying what is valid.

"Before any side effect" is measured, not assumed: around every call the test records containers, images,
volumes, registry repositories, AMIs and Terraform state objects carrying this case's unique marker,
every terraform/packer/ansible-playbook/ansible-runner process started below this test process
(a /proc sampler), and every process this Python process spawned at all (`tests.spawn_count`: audit
events of subprocess.Popen, os.posix_spawn, os.fork...). All must be empty: zero processes started.
Parallel test runs on the same sandbox cannot disturb the count:
only names carrying the marker (a uuid) are counted.
"""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from blocks import DockerHost
from flows.refresh import refresh_servers
from flows.release import build_app, deploy_app, release
from tests.blocks import save_backend
from tests.conftest import BUILDER_IMAGE, TEST_LABEL
from tests.release_form import release_form
from tests.reliability.helpers import ProcSampler, sandbox_catalog
from tests.spawn_count import SpawnCounter
from tools import packer
from tools.errors import InvalidInput
from tools.settings import INFRA_DIR

pytestmark = pytest.mark.reliability
APP_SRC = INFRA_DIR / "apps" / "hire-help"


@dataclass
class Ctx:
    uid: str
    app: Path
    backend_block: str
    workdir: Path

    def release(self, **over) -> object:
        params = {
            "app_path": str(self.app),
            "app_name": f"rel-{self.uid}",
            "image_repository": f"devops-flows-rel/{self.uid}",
            "builder_image": BUILDER_IMAGE,
            "cache_volume": f"rel-cache-{self.uid}",
            "ports": [{"container_port": 10000, "host_port": 18099, "host_ip": "127.0.0.1"}],
            "labels": {TEST_LABEL: "1", "devops-flows.rel": self.uid},
            "push_retries": 0,
        }
        params.update(over)
        return release(params=release_form(**params), return_state=True)

    def refresh(self, **over) -> object:
        target = {
            "limit": "xwiki",
            "extra_vars": {
                "xwiki_container_name": f"rel-{self.uid}",
                "xwiki_port": 18098,
                "xwiki_labels": {TEST_LABEL: "1"},
                "target_root": str(self.workdir / "root"),
            },
        }
        target.update(over)
        return refresh_servers(target=target, return_state=True)

    def bake(self, **over) -> object:
        from flows.bake import bake_image

        spec = {"host": "xwiki", "os": "ubuntu-18.04", "mode": "build", "environment": f"rel-{self.uid}"}
        spec.update(over)
        return bake_image(spec=spec, return_state=True)

    def apply(self, **over) -> object:
        from flows.apply import apply_stack

        request = {"stack": "scalac/internal-prod/xwiki", "variables": {"name": f"rel-{self.uid}"}}
        request.update(over)
        return apply_stack(request=request, backend_block=self.backend_block, return_state=True)


def _executable_inventory(ctx: Ctx) -> object:
    """An inventory script that would leave a marker file if Ansible (or validation) ever ran it."""
    script = ctx.workdir / f"inventory-{ctx.uid}.sh"
    script.write_text(f"#!/bin/sh\ntouch {ctx.workdir}/ran-{ctx.uid}\necho '{{}}'\n")
    script.chmod(0o755)
    state = ctx.refresh(inventory=str(script))
    assert not (ctx.workdir / f"ran-{ctx.uid}").exists(), "the inventory script ran"
    return state


def _inventory_directory(ctx: Ctx) -> object:
    (ctx.workdir / f"invdir-{ctx.uid}").mkdir()
    return ctx.refresh(inventory=str(ctx.workdir / f"invdir-{ctx.uid}"))


def _jinja_lookup(ctx: Ctx) -> object:
    state = ctx.refresh(extra_vars={"motd": f"{{{{ lookup('pipe', 'touch {ctx.workdir}/ran-{ctx.uid}') }}}}"})
    assert not (ctx.workdir / f"ran-{ctx.uid}").exists(), "the lookup ran"
    return state


def _two_versions(ctx: Ctx) -> object:
    (ctx.app / "build.sbt").write_text('name := "hire-help"\nversion := "1.0.0"\nversion := "1.1.0"\n')
    return ctx.release()


def _no_build_sbt(ctx: Ctx) -> object:
    (ctx.app / "build.sbt").unlink()
    return ctx.release()


def _dotdot_version(ctx: Ctx) -> object:
    (ctx.app / "build.sbt").write_text('name := "hire-help"\nversion := "../../1.0"\n')
    return ctx.release()


def _deploy(ctx: Ctx, reference: str, **over) -> object:
    params = {
        "app_name": f"rel-{ctx.uid}",
        "image_reference": reference,
        "labels": {TEST_LABEL: "1", "devops-flows.rel": ctx.uid},
    }
    params.update(over)
    return deploy_app(params=params, return_state=True)


DIGEST = "sha256:" + "ab" * 32


def _plaintext_tcp_engine(ctx: Ctx) -> str:
    """A DockerHost block for a tcp:// engine without TLS (nothing listens there)."""
    name = f"rel-tcp-{ctx.uid}"
    DockerHost(base_url="tcp://127.0.0.1:9").save(name, overwrite=True)
    return name


BAD = "BAD"  # placeholder: a case's own value is in the lambda

# id -> (flow, call, text the error must contain: what is valid)
CASES: dict[str, tuple[str, Callable[[Ctx], object], str]] = {
    # release: names
    "release-app-name-dotdot": ("release", lambda c: c.release(app_name=f"a..{c.uid}"), "without '..'"),
    "release-app-name-slash": ("release", lambda c: c.release(app_name=f"a/{c.uid}"), "[a-zA-Z0-9_.-]"),
    "release-app-name-semicolon": (
        "release",
        lambda c: c.release(app_name=f"a;rm -rf {c.uid}"),
        "[a-zA-Z0-9_.-]",
    ),
    "release-app-name-space": (
        "release",
        lambda c: c.release(app_name=f"hire help {c.uid}"),
        "[a-zA-Z0-9_.-]",
    ),
    "release-app-name-newline": ("release", lambda c: c.release(app_name=f"rel-{c.uid}\n"), "[a-zA-Z0-9_.-]"),
    "release-app-name-empty": ("release", lambda c: c.release(app_name=""), "[a-zA-Z0-9_.-]"),
    "release-repository-empty": ("release", lambda c: c.release(image_repository=""), "lowercase"),
    "release-app-name-overlong": ("release", lambda c: c.release(app_name="a" * 200 + c.uid), "1-128"),
    "release-unknown-environment": (
        "release",
        lambda c: c.release(environment="qa"),
        "'dev', 'staging' or 'prod'",
    ),
    # release: image references and tags
    "release-repository-uppercase": (
        "release",
        lambda c: c.release(image_repository=f"Hire_Help_{c.uid}"),
        "lowercase",
    ),
    "release-repository-with-host": (
        "release",
        lambda c: c.release(image_repository=f"127.0.0.1:5000/x{c.uid}"),
        "path only",
    ),
    "release-repository-dotdot": (
        "release",
        lambda c: c.release(image_repository=f"a/../{c.uid}"),
        "lowercase",
    ),
    "release-tag-leading-dash": ("release", lambda c: c.release(extra_tags=["-latest"]), "[A-Za-z0-9_.-]"),
    "release-tag-newline": ("release", lambda c: c.release(extra_tags=["v1\n"]), "[A-Za-z0-9_.-]"),
    "release-tag-colon": ("release", lambda c: c.release(extra_tags=["a:b"]), "[A-Za-z0-9_.-]"),
    "deploy-reference-not-pinned": (
        "deploy-app",
        lambda c: _deploy(c, f"127.0.0.1:5000/x{c.uid}:latest"),
        "@sha256:<hex>",
    ),
    "deploy-reference-bad-digest": (
        "deploy-app",
        lambda c: _deploy(c, f"127.0.0.1:5000/x{c.uid}@sha256:abc"),
        "sha256:<64 hex digits>",
    ),
    # credentials and secrets go only where they belong (issue 15)
    "deploy-plaintext-tcp-engine-with-secrets": (
        "deploy-app",
        lambda c: _deploy(c, f"127.0.0.1:5000/x{c.uid}@{DIGEST}", docker_host_block=_plaintext_tcp_engine(c)),
        "without TLS",
    ),
    "release-builder-not-allowed-app-secrets": (
        "release",
        lambda c: c.release(builder_image=f"devops-flows/other-builder:{c.uid}"),
        "allowed are",
    ),
    # release: ports and environment
    "release-port-out-of-range": (
        "release",
        lambda c: c.release(ports=[{"container_port": 10000, "host_port": 70000}]),
        "ports are 1-65535",
    ),
    "release-port-zero": (
        "release",
        lambda c: c.release(ports=[{"container_port": 0, "host_port": 8080}]),
        "ports are 1-65535",
    ),
    "deploy-port-published-twice": (
        "deploy-app",
        lambda c: _deploy(
            c,
            f"127.0.0.1:5000/x{c.uid}@{DIGEST}",
            ports=[{"container_port": 80, "host_port": 8080}, {"container_port": 80, "host_port": 8081}],
        ),
        "published twice",
    ),
    "release-env-name-invalid": (
        "release",
        lambda c: c.release(env={"BAD-NAME": "1"}),
        "[A-Za-z_][A-Za-z0-9_]*",
    ),
    # release: the sbt project
    "release-missing-build-sbt": ("release", _no_build_sbt, "must hold an sbt project (build.sbt)"),
    "release-two-version-settings": ("release", _two_versions, "expected exactly one"),
    "release-version-dotdot": ("release", _dotdot_version, "no '..'"),
    "release-app-path-missing": (
        "release",
        lambda c: c.release(app_path=str(c.workdir / "nowhere")),
        "give the app's work-tree",
    ),
    # ansible
    "refresh-inventory-missing": (
        "refresh-servers",
        lambda c: c.refresh(inventory=f"no-such-{c.uid}.ini"),
        "relative to",
    ),
    "refresh-limit-matches-no-host": (
        "refresh-servers",
        lambda c: c.refresh(limit=f"nohost{c.uid[:6]}"),
        "hosts are: xwiki",
    ),
    "refresh-limit-shell-chars": (
        "refresh-servers",
        lambda c: c.refresh(limit="xwiki;id"),
        "should match pattern",
    ),
    "refresh-limit-newline": (
        "refresh-servers",
        lambda c: c.refresh(limit="xwiki\n"),
        "should match pattern",
    ),
    "refresh-extra-var-secret": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"db_password": "x"}),
        "vaulted host_vars",
    ),
    "refresh-extra-var-nested-secret": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"app": {"api_token": "x"}}),
        "app.api_token",
    ),
    "refresh-tags-with-space": ("refresh-servers", lambda c: c.refresh(tags="a b"), "should match pattern"),
    "refresh-forks-zero": ("refresh-servers", lambda c: c.refresh(forks=0), "greater than or equal to 1"),
    # ansible: paths (issue 15.5)
    "refresh-inventory-empty": ("refresh-servers", lambda c: c.refresh(inventory=""), "at least 1 character"),
    "refresh-playbook-empty": ("refresh-servers", lambda c: c.refresh(playbook=""), "at least 1 character"),
    "refresh-inventory-overlong": (
        "refresh-servers",
        lambda c: c.refresh(inventory="i" * 300 + ".ini"),
        "at most 200 characters",
    ),
    "refresh-inventory-executable": ("refresh-servers", _executable_inventory, "is executable"),
    "refresh-inventory-directory": ("refresh-servers", _inventory_directory, "not a regular file"),
    "refresh-inventory-outside-root": (
        "refresh-servers",
        lambda c: c.refresh(inventory="/etc/hosts"),
        "outside the Ansible root",
    ),
    "refresh-playbook-dotdot-outside-root": (
        "refresh-servers",
        lambda c: c.refresh(playbook="../../../../../../etc/passwd"),
        "outside the Ansible root",
    ),
    "refresh-playbook-shell-chars": (
        "refresh-servers",
        lambda c: c.refresh(playbook="internal_hosts.yml;id"),
        "should match pattern",
    ),
    # ansible: limit and tags
    "refresh-limit-at-file": (
        "refresh-servers",
        lambda c: c.refresh(limit="@/etc/hosts"),
        "should match pattern",
    ),
    "refresh-limit-leading-dash": (
        "refresh-servers",
        lambda c: c.refresh(limit="--list-hosts"),
        "should match pattern",
    ),
    "refresh-limit-overlong": ("refresh-servers", lambda c: c.refresh(limit="x" * 300), "at most 256"),
    "refresh-tags-empty": ("refresh-servers", lambda c: c.refresh(tags=""), "should match pattern"),
    # ansible: extra vars (connection, privilege, Jinja, secret-looking names)
    "refresh-extra-var-ansible-connection": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"ansible_connection": "local"}),
        "ansible_* connection/privilege",
    ),
    "refresh-extra-var-ansible-become": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"ansible_become": True, "ansible_become_user": "root"}),
        "ansible_* connection/privilege",
    ),
    "refresh-extra-var-ansible-ssh-args": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"ansible_ssh_common_args": "-o ProxyCommand=id"}),
        "ansible_* connection/privilege",
    ),
    "refresh-extra-var-magic-hostvars": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"hostvars": {}}),
        "magic variables",
    ),
    "refresh-extra-var-jinja-lookup": ("refresh-servers", _jinja_lookup, "contains Jinja"),
    "refresh-extra-var-jinja-nested-list": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"app": {"items": ["ok", "{% for x in y %}"]}}),
        "app.items[1]",
    ),
    "refresh-extra-var-jinja-comment": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"note": "{# hidden #}"}),
        "contains Jinja",
    ),
    "refresh-extra-var-jinja-in-nested-key": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"app": {"{{ x }}": 1}}),
        "contains Jinja",
    ),
    "refresh-extra-var-name-invalid": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"bad-name": 1}),
        "should match pattern",
    ),
    "refresh-extra-var-pass-suffix": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"db_pass": "x"}),
        "looks like a secret",
    ),
    "refresh-extra-var-nested-private-key": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"deploy": {"ssh": {"private_key": "x"}}}),
        "deploy.ssh.private_key",
    ),
    "refresh-extra-var-nested-secret-in-list": (
        "refresh-servers",
        lambda c: c.refresh(extra_vars={"users": [{"name": "a", "user_secret": "x"}]}),
        "users[0].user_secret",
    ),
    "refresh-vault-block-name-invalid": (
        "refresh-servers",
        lambda c: refresh_servers(target={"limit": "xwiki"}, vault_block="../x", return_state=True),
        "should match pattern",
    ),
    # packer
    "bake-unknown-host": ("bake-image", lambda c: c.bake(host="nosuch"), "'jenkins' or 'xwiki'"),
    "bake-unknown-os": ("bake-image", lambda c: c.bake(os="windows-95"), "'ubuntu-18.04'"),
    "bake-unknown-mode": ("bake-image", lambda c: c.bake(mode="yolo"), "'build' or 'ci'"),
    "bake-host-dotdot": ("bake-image", lambda c: c.bake(host="../xwiki"), "'jenkins' or 'xwiki'"),
    "bake-host-slash": ("bake-image", lambda c: c.bake(host="host/xwiki"), "'jenkins' or 'xwiki'"),
    # terraform
    "apply-unknown-stack": ("apply-stack", lambda c: c.apply(stack="scalac/nope"), "valid stacks"),
    "apply-stack-dotdot": ("apply-stack", lambda c: c.apply(stack="scalac/../../etc"), "valid stacks"),
    "apply-stack-semicolon": (
        "apply-stack",
        lambda c: c.apply(stack="scalac/internal-prod/xwiki;id"),
        "valid stacks",
    ),
    "apply-undeclared-variable": (
        "apply-stack",
        lambda c: c.apply(variables={"name": c.uid, "nope": "1"}),
        "valid: ami_id",
    ),
    "apply-variable-name-newline": (
        "apply-stack",
        lambda c: c.apply(variables={"name\n": c.uid}),
        "valid: ami_id",
    ),
}

# Known gaps: the case runs for real and is expected to fail until the fix named in the reason is made.
KNOWN_GAPS: dict[str, str] = {}


def _marked(uid: str, docker_client, ec2, s3, bucket: str) -> dict[str, list[str]]:
    """Everything that carries the case's marker, or a tool process started below this process."""
    found: dict[str, list[str]] = {
        # the list calls only (no inspect of each): the other xdist worker removes its own meanwhile
        "containers": [
            name
            for c in docker_client.api.containers(all=True)
            for name in c.get("Names") or []
            if uid in name or (c.get("Labels") or {}).get("devops-flows.rel") == uid
        ],
        "images": [t for i in docker_client.api.images() for t in i.get("RepoTags") or [] if uid in t],
        "volumes": [v.name for v in docker_client.volumes.list() if uid in v.name],
        "registry": [r for r in sandbox_catalog() if uid in r],
        "amis": [
            i["ImageId"]
            for i in ec2.describe_images(
                Owners=["self"], Filters=[{"Name": "tag:environment", "Values": [f"rel-{uid}"]}]
            )["Images"]
        ],
        "state_objects": [
            o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"rel/{uid}/").get("Contents", [])
        ],
    }
    return {k: v for k, v in found.items() if v}


@pytest.fixture(scope="module")
def aws(sandbox_env):
    kw = {"endpoint_url": sandbox_env["AWS_ENDPOINT_URL"], "region_name": "eu-central-1"}
    return boto3.client("ec2", **kw), boto3.client("s3", **kw), sandbox_env["DEVOPS_TF_STATE_BUCKET"]


@pytest.fixture
def ctx(workdir: Path, blocks, sandbox_env) -> Ctx:
    uid = uuid.uuid4().hex[:10]
    app = workdir / "hire-help"
    shutil.copytree(APP_SRC, app)
    backend = f"rel-backend-{uid}"
    save_backend(sandbox_env, backend, f"rel/{uid}/")
    return Ctx(uid=uid, app=app, backend_block=backend, workdir=workdir)


def _rejected(state) -> BaseException:
    assert state.is_failed(), f"accepted: {state}"
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, BaseException), exc
    return exc


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_rejected_before_any_side_effect(case: str, ctx: Ctx, docker_client, aws) -> None:
    if case in KNOWN_GAPS:
        pytest.xfail(KNOWN_GAPS[case])
    _flow, call, valid = CASES[case]
    ec2, s3, bucket = aws
    with ProcSampler(interval=0.05) as sampler, SpawnCounter() as spawned:
        state = call(ctx)
    exc = _rejected(state)
    from prefect.exceptions import ParameterTypeError

    assert isinstance(exc, InvalidInput | ParameterTypeError), repr(exc)
    assert valid in str(exc), f"the error does not say what is valid ({valid!r}): {exc}"
    assert sampler.tools_seen == [], f"a tool process was started: {sampler.tools_seen}"
    assert spawned.count == 0, f"{spawned.count} process(es) started before the rejection: {spawned.events}"
    assert _marked(ctx.uid, docker_client, ec2, s3, bucket) == {}


def test_zip_with_parent_entries_is_rejected_before_anything_is_written(ctx: Ctx, builder_image) -> None:
    """The build produces a zip with `../` entries: unpack-package refuses it and writes no file at all."""
    evil = ctx.app / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("hire-help-1.0.0/bin/start.sh", "#!/bin/sh\n")
        zf.writestr(f"../../escaped-{ctx.uid}.txt", "pwned")
    command = ["sh", "-c", "mkdir -p target/universal && cp evil.zip target/universal/hire-help-1.0.0.zip"]
    state = build_app(
        params={
            "app_path": str(ctx.app),
            "builder_image": builder_image,
            "build_command": command,
            "cache_volume": f"rel-cache-{ctx.uid}",
            "labels": {TEST_LABEL: "1"},
        },
        return_state=True,
    )
    exc = _rejected(state)
    assert isinstance(exc, InvalidInput) and "escapes the destination" in str(exc), repr(exc)
    for root in (ctx.app, ctx.app.parent, ctx.app.parent.parent):
        assert not (root / f"escaped-{ctx.uid}.txt").exists()
    assert not (ctx.app / "hire-help-1.0.0").exists()  # validated before anything was written


@pytest.mark.parametrize(
    "label, text",
    [
        pytest.param("malformed", '{"hostname": "xwiki",', id="malformed"),
        pytest.param("non-object", '["hostname", "xwiki"]', id="non-object"),
        pytest.param(
            "reserved-key", json.dumps({"hostname": "xwiki", "content_hash": "forged"}), id="reserved-key"
        ),
    ],
)
def test_var_file_error_is_rejected_naming_the_file(label: str, text: str, tmp_path: Path) -> None:
    """Malformed and non-object var files, and a var file setting a key the bake reserves (no process)."""
    shutil.copytree(packer.PACKER_DIR / "vars", tmp_path / "vars")
    (tmp_path / "vars" / "host" / "xwiki.json").write_text(text)
    files = packer.layer_files("xwiki", "ubuntu-18.04", "build", base=tmp_path)
    with pytest.raises(InvalidInput, match=r"xwiki\.json"):
        packer.merge_layers(files, {"mode": "build"})


def test_rollout_validates_the_stack_before_baking(ctx: Ctx, aws, docker_client) -> None:
    """ami-rollout with an unknown stack or variable must fail before Packer starts (no AMI)."""
    from flows.rollout import ami_rollout

    ec2, s3, bucket = aws
    with ProcSampler(interval=0.05) as sampler:
        state = ami_rollout(
            request={
                "bake": {"host": "xwiki", "environment": f"rel-{ctx.uid}"},
                "stack": "scalac/nope",
                "variables": {"name": ctx.uid},
            },
            backend_block=ctx.backend_block,
            return_state=True,
        )
    exc = _rejected(state)
    marked = _marked(ctx.uid, docker_client=docker_client, ec2=ec2, s3=s3, bucket=bucket)
    for ami in marked.get("amis", []):
        ec2.deregister_image(ImageId=ami)
    assert isinstance(exc, InvalidInput) and "valid stacks" in str(exc), repr(exc)
    assert not [a for a in sampler.tools_seen if Path(a[0]).name == "packer"], "packer ran before validation"
    assert marked == {}
