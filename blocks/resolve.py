"""Credentials resolved once: the blocks a flow run needs, loaded once per run, and what the tasks build
from them (boto3 clients, a tool's AWS environment, the Terraform backend).

Every task asks here instead of calling `Block.load` itself, so a bake that plans, resolves its source
AMI, validates and builds loads the AWS block once, not five times, and every step of one run sees the
same values even if someone edits the block meanwhile. The cache is keyed by the flow run (a subflow is a
run of its own), except inside `shared_with_subflows()`: a flow that composes subflows (ami-rollout:
bake-image and apply-stack) lends them its own, so each block is loaded once per rollout, not once per flow
run. Outside a flow run nothing is cached. `LOADS` counts the reads from the API, per block. Values stay in
this process's memory, where the loaded blocks were anyway; the secrets in them are registered for
redaction when a tool's environment is made (blocks/environment.py).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from prefect.blocks.core import Block

from blocks.environment import aws_environment

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials

    from blocks import TerraformBackend

__all__ = [
    "LOADS",
    "aws_clients",
    "aws_credentials",
    "aws_endpoint",
    "aws_env",
    "load",
    "shared_with_subflows",
    "terraform_backend",
]

B = TypeVar("B", bound=Block)
RUNS_KEPT = 32  # flow runs whose blocks stay cached in this process (a served process runs one)

LOADS: Counter[tuple[str, str]] = Counter()  # (block type, name) -> reads from the API, in this process

_loaded: OrderedDict[str, dict[tuple[str, str], Block]] = OrderedDict()
_loading: dict[tuple[str, str, str], threading.Lock] = {}  # one read at a time per (run, block)
_lock = threading.Lock()
_clients_lock = threading.Lock()
_shared_run: ContextVar[str | None] = ContextVar("devops_blocks_shared_run", default=None)


def _flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def _run_id() -> str | None:
    return _shared_run.get() or _flow_run_id()


@contextmanager
def shared_with_subflows() -> Iterator[None]:
    """Within this block of a flow run, its subflows (and the threads started with a copy of its context)
    use the blocks this run loaded, and load the missing ones for it: one read per block for the whole
    composition. Nested, the outermost run keeps lending; outside a flow run, nothing changes."""
    run = _run_id()
    token = _shared_run.set(run) if run is not None else None
    try:
        yield
    finally:
        if token is not None:
            _shared_run.reset(token)


def _read(block_type: type[B], name: str) -> B:
    LOADS[(block_type.__name__, name)] += 1
    return block_type.load(name)


def load(block_type: type[B], name: str) -> B:
    """`block_type.load(name)`, once per flow run (concurrent first asks wait for the one read)."""
    run = _run_id()
    if run is None:
        return _read(block_type, name)
    key = (block_type.__name__, name)
    with _lock:
        found = _loaded.get(run, {}).get(key)
        reading = _loading.setdefault((run, *key), threading.Lock())
    if found is not None:
        return found  # type: ignore[return-value]
    with reading:
        with _lock:
            found = _loaded.get(run, {}).get(key)
        if found is not None:
            return found  # type: ignore[return-value]
        block = _read(block_type, name)
        with _lock:
            blocks = _loaded.setdefault(run, {})
            _loaded.move_to_end(run)
            block = blocks.setdefault(key, block)  # type: ignore[assignment]
            while len(_loaded) > RUNS_KEPT:
                gone, _ = _loaded.popitem(last=False)
                for held in [k for k in _loading if k[0] == gone]:
                    del _loading[held]
    return block


def aws_credentials(name: str) -> AwsCredentials:
    from prefect_aws import AwsCredentials

    return load(AwsCredentials, name)


def terraform_backend(name: str) -> TerraformBackend:
    from blocks import TerraformBackend

    return load(TerraformBackend, name)


def aws_clients(name: str, *services: str) -> list[Any]:
    """boto3 clients from prefect-aws's client cache. Creating one costs ~0.5 s of CPU (the service
    model); the lock lets concurrent tasks (a fan-out of bakes) wait for the first instead of each
    building its own under the GIL. The clients themselves are thread-safe."""
    creds = aws_credentials(name)
    with _clients_lock:
        return [creds.get_client(service) for service in services]


def aws_endpoint(name: str) -> str:
    """The block's endpoint URL (the sandbox's moto), or "" for AWS itself."""
    return aws_credentials(name).aws_client_parameters.endpoint_url or ""


def aws_env(name: str, region: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(env, secret_env) of a tool that talks to AWS with the block `name` (blocks/environment.py)."""
    return aws_environment(aws_credentials(name), region)
