"""What every Terraform task builds first: the backend block, the environment for Terraform (AWS keys as
secret environment only; the endpoint, when set, switches the stack's provider to the sandbox through
TF_VAR_aws_endpoint), a Runner for a workspace, an initialised workspace, and an S3 client for the state
bucket.

Ahead of time (`init_ahead`): while Packer bakes, a thread loads the blocks, builds the boto3 clients,
checks the state bucket and prepares the apply's private workspace with its `terraform init`; the next
`init_workspace` of the same stack, state key and blocks (with the variables the rollout knew, plus the
pending ones such as ami_id) takes that workspace (`_take_ahead`, its var file rewritten) instead of
initialising one (`_init_fresh`). A failed or mismatching preparation falls back to a fresh init. The
prepared workspace carries this live process as owner (never a dead run's to the sweep), and what is not
handed over is stopped and removed when `init_ahead` exits, on a failure or cancel too.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from blocks import TerraformBackend, resolve
from tools import aws as aws_tool
from tools import terraform as tf
from tools.process import default_logger, stop_runs_in
from tools.terraform import Workspace
from tools.terraform_workspace import write_variables

__all__ = [
    "Ahead",
    "deadlines",
    "init_ahead",
    "init_workspace",
    "runner_for",
    "settle_ahead",
    "state_bucket",
    "state_key",
    "terraform_context",
]


def terraform_context(
    backend_block: str, aws_block: str
) -> tuple[TerraformBackend, dict[str, str], dict[str, str]]:
    backend = resolve.terraform_backend(backend_block)
    env, secret_env = resolve.aws_env(aws_block, backend.region)
    env["TF_VAR_aws_region"] = env.get("AWS_REGION", "")
    env["TF_VAR_aws_endpoint"] = resolve.aws_endpoint(aws_block)
    return backend, env, secret_env


def deadlines(backend: TerraformBackend) -> tf.Deadlines:
    return tf.Deadlines(
        plan_seconds=backend.plan_timeout_seconds,
        apply_seconds=backend.apply_timeout_seconds,
        plan_stop_seconds=backend.plan_stop_seconds,
        apply_stop_seconds=backend.apply_stop_seconds,
    )


def runner_for(
    workspace: Workspace, backend_block: str, aws_block: str
) -> tuple[tf.Runner, TerraformBackend]:
    backend, env, secret_env = terraform_context(backend_block, aws_block)
    runner = tf.Runner(
        workspace, env=env, secret_env=secret_env, deadlines=deadlines(backend), logger=default_logger()
    )
    return runner, backend


def init_workspace(
    stack: str, variables: Mapping[str, str] | None, key: str, backend_block: str, aws_block: str
) -> tuple[Workspace, tf.Runner, TerraformBackend]:
    """A private workspace of `stack` with `variables`, `terraform init` done against the state `key`
    (the one initialised ahead when it matches); the caller removes it when done."""
    taken = _take_ahead(stack, variables or {}, key, backend_block, aws_block)
    return taken if taken is not None else _init_fresh(stack, variables, key, backend_block, aws_block)


def _init_fresh(
    stack: str, variables: Mapping[str, str] | None, key: str, backend_block: str, aws_block: str
) -> tuple[Workspace, tf.Runner, TerraformBackend]:
    """Prepare and init a workspace now; it is removed again if the init fails."""
    workspace = tf.prepare_workspace(stack, variables, key)
    try:
        runner, backend = runner_for(workspace, backend_block, aws_block)
        config = tf.backend_config(backend.bucket, key, backend.region, backend.endpoint_url)
        tf.init(runner, config, backend.lock_timeout_seconds)
    except BaseException:
        tf.remove_workspace(workspace)
        raise
    return workspace, runner, backend


def state_key(backend: TerraformBackend, stack: str) -> str:
    return f"{backend.key_prefix}{stack}/terraform.tfstate"


def state_bucket(backend_block: str, aws_block: str, stack: str) -> tuple[Any, TerraformBackend, str]:
    """An S3 client for the state bucket (prefect-aws caches it per credentials in this process), the
    backend, and the stack's state key."""
    backend = resolve.terraform_backend(backend_block)
    creds = resolve.aws_credentials(aws_block)
    params = creds.aws_client_parameters.model_copy(update={"endpoint_url": backend.endpoint_url or None})
    s3 = creds.model_copy(update={"aws_client_parameters": params}).get_client("s3")
    return s3, backend, state_key(backend, stack)


# --- ahead of time -------------------------------------------------------------------------------------


@dataclass
class Ahead:
    """A workspace being prepared and initialised in a thread, for the next init of the same stack."""

    stack: str
    variables: dict[str, str]
    pending: frozenset[str]
    backend_block: str
    aws_block: str
    key: str = ""
    workspace: Workspace | None = None
    ready: bool = False
    error: BaseException | None = None
    taken: bool = False
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mismatch(
        self, stack: str, variables: Mapping[str, str], key: str, backend_block: str, aws_block: str
    ) -> str | None:
        """Why a later init of these may not use this workspace; None when it may."""
        known = {k: v for k, v in variables.items() if k not in self.pending}
        wanted = (self.stack, self.key, self.backend_block, self.aws_block)
        if (stack, key, backend_block, aws_block) != wanted:
            return f"prepared for {self.stack} ({self.key}, {self.backend_block}, {self.aws_block})"
        if known != self.variables or not self.pending <= set(variables):
            return "prepared for other variables"
        return None


_AHEAD: contextvars.ContextVar[Ahead | None] = contextvars.ContextVar("devops_terraform_ahead", default=None)


@contextmanager
def init_ahead(
    stack: str,
    variables: Mapping[str, str],
    backend_block: str,
    aws_block: str,
    pending: Iterable[str] = (),
    clients: Iterable[str] = (),
) -> Iterator[Ahead]:
    """Prepare, in a thread, what the apply of `stack` needs first (the blocks, the boto3 `clients`, the
    state bucket checked, a workspace with `terraform init` done) while the block runs; the apply's
    `init_workspace` takes the workspace when its variables are `variables` plus the `pending` names.
    On exit, whatever was not handed over is stopped and removed."""
    stack = tf.resolve_stack(stack).relative_to(tf.TERRAFORM_DIR).as_posix()
    ahead = Ahead(stack, dict(variables), frozenset(pending), backend_block, aws_block)
    context = contextvars.copy_context()  # the run's logger and its shared blocks
    ahead.thread = threading.Thread(
        target=context.run, args=(_prepare, ahead, tuple(clients)), name=f"ahead {stack}", daemon=True
    )
    ahead.thread.start()
    token = _AHEAD.set(ahead)
    try:
        yield ahead
    finally:
        _AHEAD.reset(token)
        _discard(ahead)


def _prepare(ahead: Ahead, clients: tuple[str, ...]) -> None:
    try:
        s3, backend, ahead.key = state_bucket(ahead.backend_block, ahead.aws_block, ahead.stack)
        aws_tool.call(f"head_bucket {backend.bucket}", s3.head_bucket, Bucket=backend.bucket)
        if clients:
            resolve.aws_clients(ahead.aws_block, *clients)
        with ahead.lock:
            if ahead.stop.is_set():
                return
            ahead.workspace = tf.prepare_workspace(ahead.stack, ahead.variables, ahead.key)
        runner, backend = runner_for(ahead.workspace, ahead.backend_block, ahead.aws_block)
        config = tf.backend_config(backend.bucket, ahead.key, backend.region, backend.endpoint_url)
        default_logger().info("terraform init of %s ahead, while the image bakes", ahead.stack)
        tf.init(runner, config, backend.lock_timeout_seconds)
        ahead.ready = True
    except BaseException as exc:  # noqa: BLE001 - kept: the apply initialises afresh and reports its own
        ahead.error = exc


def settle_ahead(stack: str | None = None) -> Ahead | None:
    """Wait until the preparation ahead (of `stack`, or any) is over, so no terraform of ours is still
    running; the Ahead, or None when there is none."""
    ahead = _AHEAD.get()
    if ahead is None or (stack is not None and tf.slug(stack) != tf.slug(ahead.stack)):
        return None
    if ahead.thread is not None:
        ahead.thread.join()
    return ahead


def _take_ahead(
    stack: str, variables: Mapping[str, str], key: str, backend_block: str, aws_block: str
) -> tuple[Workspace, tf.Runner, TerraformBackend] | None:
    """The workspace initialised ahead, handed over when it was made for exactly this init; None: init."""
    ahead = _AHEAD.get()
    if ahead is None or ahead.taken or settle_ahead() is None:
        return None
    log = default_logger()
    with ahead.lock:
        if ahead.taken:
            return None
        reason = ahead.mismatch(stack, variables, key, backend_block, aws_block)
        if reason is not None:
            log.info("the workspace initialised ahead does not fit this init (%s): a fresh one", reason)
            return None
        ahead.taken = True
        workspace = ahead.workspace
    if not ahead.ready or workspace is None:
        log.warning("terraform init ahead of %s failed (%s): initialising again", stack, ahead.error)
        if workspace is not None:
            tf.remove_workspace(workspace)
        return None
    write_variables(workspace, variables)
    runner, backend = runner_for(workspace, backend_block, aws_block)
    log.info("using the workspace of %s initialised ahead", stack)
    return workspace, runner, backend


def _discard(ahead: Ahead) -> None:
    """Stop the preparation if it still runs; remove its workspace unless it was handed over."""
    ahead.stop.set()
    thread = ahead.thread
    while thread is not None and thread.is_alive():
        if thread.ident is not None:
            stop_runs_in([thread.ident])  # its terraform init, by Terraform's own protocol
        thread.join(0.2)
    with ahead.lock:
        if ahead.taken:
            return
        ahead.taken = True
    if ahead.workspace is not None:
        tf.remove_workspace(ahead.workspace)
