"""Credentials resolved once: the blocks a flow run needs, loaded once per run, and what the tasks build
from them (boto3 clients, a tool's AWS environment, the Terraform backend).

Every task asks here instead of calling `Block.load` itself, so a bake that plans, resolves its source
AMI, validates and builds loads the AWS block once, not five times, and every step of one run sees the
same values even if someone edits the block meanwhile. The cache is keyed by the flow run (a subflow is a
run of its own); outside a flow run nothing is cached. Values stay in this process's memory, where the
loaded blocks were anyway; the secrets in them are registered for redaction when a tool's environment is
made (blocks/environment.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar

from prefect.blocks.core import Block

from blocks.environment import aws_environment

if TYPE_CHECKING:
    from prefect_aws import AwsCredentials

    from blocks import TerraformBackend

__all__ = ["aws_clients", "aws_credentials", "aws_env", "aws_endpoint", "load", "terraform_backend"]

B = TypeVar("B", bound=Block)
RUNS_KEPT = 32  # flow runs whose blocks stay cached in this process (a served process runs one)

_loaded: OrderedDict[str, dict[tuple[str, str], Block]] = OrderedDict()
_lock = threading.Lock()
_clients_lock = threading.Lock()


def _run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def load(block_type: type[B], name: str) -> B:
    """`block_type.load(name)`, once per flow run."""
    run = _run_id()
    if run is None:
        return block_type.load(name)
    key = (block_type.__name__, name)
    with _lock:
        found = _loaded.get(run, {}).get(key)
    if found is not None:
        return found  # type: ignore[return-value]
    block = block_type.load(name)
    with _lock:
        blocks = _loaded.setdefault(run, {})
        _loaded.move_to_end(run)
        block = blocks.setdefault(key, block)  # type: ignore[assignment]
        while len(_loaded) > RUNS_KEPT:
            _loaded.popitem(last=False)
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
