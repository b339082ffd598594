"""Checks before any change (pre-flight): a flow runs them before its first side effect, and a finding
fails the run with PreflightFailed carrying the tool's own messages.

- apply-stack and ami-rollout: `terraform validate` of the stack, in a private copy initialised without a
  backend (no state read, no credentials given); ami-rollout validates before it bakes;
- refresh-servers: `ansible-playbook --syntax-check` and `ansible-lint` (offline, the project's
  `.ansible-lint`) on the playbook and its roles;
- release: `hadolint` on the app's Dockerfile (the app's `.hadolint.yaml` when present).
(`packer validate` runs in the bake itself.)

A pass is remembered for a day per fingerprint of the checked files and the tool's version
(tools/check_marks.py), so a schedule pays each check once per change.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tools import check_marks, lint
from tools import terraform as tf
from tools.errors import PreflightFailed
from tools.process import default_logger
from tools.terraform_runner import Runner


def _checked(kind: str, files: list[Path], version_argv: list[str], check) -> None:  # noqa: ANN001 - () -> findings
    mark = check_marks.fingerprint(kind, files, lint.version_of(version_argv))
    log = default_logger()
    if check_marks.passed_recently(mark):
        log.info("pre-flight %s: passed before with these exact files (remembered for a day)", kind)
        return
    findings = check()
    if findings:
        raise PreflightFailed(
            f"pre-flight {kind} failed, nothing was changed:\n" + "\n".join(findings[:20]),
            tail=findings,
            hint="fix the findings above (the tool's own messages) and run again",
        )
    check_marks.remember_pass(mark)
    log.info("pre-flight %s: passed", kind)


@task(name="preflight-terraform", cache_policy=NO_CACHE, task_run_name="terraform validate {stack}")
def validate_stack(stack: str) -> None:
    """`terraform init -backend=false` and `terraform validate -json` in a private copy of the stacks."""
    tf.resolve_stack(stack)

    def check() -> list[str]:
        workspace = tf.prepare_workspace(stack, {}, "preflight")
        try:
            return lint.terraform_validate(Runner(workspace, logger=default_logger()))
        finally:
            tf.remove_workspace(workspace)

    files = [p for p in tf.TERRAFORM_DIR.rglob("*") if p.suffix in (".tf", ".hcl", ".tfvars")]
    _checked(f"terraform validate {stack}", files, ["terraform", "version"], check)


@task(name="preflight-ansible", cache_policy=NO_CACHE, task_run_name="ansible checks {playbook}")
def check_playbook(playbook: str, inventory: str, project_dir: str) -> None:
    """`ansible-playbook --syntax-check` then `ansible-lint` on the playbook (paths under project_dir)."""
    from tools.ansible import base_env  # imports Ansible (~0.15 s): only the runs that check a playbook

    root = Path(project_dir)
    book, hosts = (root / playbook).resolve(), (root / inventory).resolve()
    env = base_env(root)

    def check() -> list[str]:
        return lint.ansible_syntax_check(book, hosts, root, env) or lint.ansible_lint(book, root, env)

    files = [book, hosts, *(root / "roles").rglob("*"), *root.glob(".ansible-lint*"), *root.glob("*.cfg")]
    _checked(f"ansible {playbook}", files, [lint.venv_tool("ansible-lint"), "--version"], check)


@task(name="preflight-dockerfile", cache_policy=NO_CACHE, task_run_name="hadolint {dockerfile}")
def check_dockerfile(dockerfile: str) -> None:
    path = Path(dockerfile)
    config = path.parent / ".hadolint.yaml"
    _checked(
        f"hadolint {path.name}",
        [path, config],
        [lint.venv_tool("hadolint"), "--version"],
        lambda: lint.hadolint(path, config),
    )
