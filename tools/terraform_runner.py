"""How every Terraform command runs: one workspace's environment, deadlines and cancel callback, through
`tools.process.run` (streamed lines, redaction, one SIGINT on cancel or deadline). A held lock becomes
`StateLocked` naming the holder; a transient-looking failure is marked transient. A `-json` command gives
its line handler's readable lines (`error_lines`) to that mapping. No Prefect here."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.errors import TAIL_LINES, StateLocked, TerraformError, ToolError, looks_transient
from tools.process import BASE_ENV, ProcessResult, run
from tools.redact import register_secret
from tools.stopping import StopPolicy, interrupt_once
from tools.terraform_lock import parse_lock_info
from tools.terraform_plan import Workspace

__all__ = ["TERRAFORM_ENV", "Deadlines", "Runner", "cli_env"]

_HINT = "see Terraform's own message in the output lines above"

# What Terraform may take from the worker's environment: its own settings and the AWS SDK's (a worker on
# AWS may get its credentials from the environment, e.g. a container role); never anything else.
TERRAFORM_ENV = (*BASE_ENV, "TF_*", "AWS_*", "CHECKPOINT_DISABLE")


def cli_env() -> dict[str, str]:
    """TF_CLI_CONFIG_FILE / TF_PLUGIN_CACHE_DIR for Terraform: the environment's when its CLI config exists,
    else the sandbox's (the machine may export a TF_CLI_CONFIG_FILE that does not exist; the sandbox's
    config points at the offline provider mirror)."""
    from tools.settings import load_env

    current = os.environ.get("TF_CLI_CONFIG_FILE", "")
    if current and Path(current).is_file():
        return {}
    sandbox = load_env()
    if sandbox.get("TF_CLI_CONFIG_FILE") and Path(sandbox["TF_CLI_CONFIG_FILE"]).is_file():
        env = {"TF_CLI_CONFIG_FILE": sandbox["TF_CLI_CONFIG_FILE"]}
        if sandbox.get("TF_PLUGIN_CACHE_DIR"):
            Path(sandbox["TF_PLUGIN_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
            env["TF_PLUGIN_CACHE_DIR"] = sandbox["TF_PLUGIN_CACHE_DIR"]
        return env
    return {}


@dataclass(frozen=True)
class Deadlines:
    """How long each kind of Terraform command may run, and how long its graceful stop may take after
    the one SIGINT (cancel or deadline) before SIGKILL. Reads (init, plan, show, output) and writes
    (apply, destroy, import, force-unlock) differ: a large apply takes long, and its graceful stop
    finishes the provider calls in flight and writes the state, which must not be cut short."""

    plan_seconds: float = 900
    apply_seconds: float = 3600
    plan_stop_seconds: float = 120
    apply_stop_seconds: float = 900

    def timeout(self, writes: bool) -> float:
        return self.apply_seconds if writes else self.plan_seconds

    def stop(self, writes: bool) -> StopPolicy:
        return interrupt_once(self.apply_stop_seconds if writes else self.plan_stop_seconds)


class Runner:
    """Runs one workspace's commands with the same environment, deadlines and cancel callback."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        deadlines: Deadlines = Deadlines(),
        should_cancel: Callable[[], bool] | None = None,
        logger=None,  # noqa: ANN001
    ) -> None:
        self.workspace = workspace
        self.env = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", **cli_env(), **(env or {})}
        self.secret_env = dict(secret_env or {})
        for value in self.secret_env.values():
            register_secret(value)
        self.deadlines, self.should_cancel, self.logger = deadlines, should_cancel, logger

    def __call__(
        self,
        argv: list[str],
        what: str,
        writes: bool = False,
        error_lines: Callable[[], list[str]] | None = None,
        **kwargs: Any,
    ) -> ProcessResult:
        """Run one command; `writes` marks the commands that write state (apply's deadlines).
        `error_lines` (a `-json` command's line handler) gives the readable lines of its output: a failure
        is mapped from them and carries them as its tail, instead of the JSON lines."""
        try:
            return run(
                argv,
                cwd=self.workspace.path,
                env=self.env,
                inherit=TERRAFORM_ENV,
                secret_env=self.secret_env,
                timeout=self.deadlines.timeout(writes),
                stop=self.deadlines.stop(writes),
                should_cancel=self.should_cancel,
                logger=self.logger,
                error=TerraformError,
                what=what,
                hint=_HINT,
                **kwargs,
            )
        except ToolError as exc:  # a failed exit (TerraformError), a cancel, our deadline
            if error_lines is not None:
                exc.tail = list(error_lines())[-TAIL_LINES:]
            if not isinstance(exc, TerraformError):
                raise
            lock = parse_lock_info(exc.tail)
            if lock is not None:
                raise StateLocked(
                    f"{what}: the state of {self.workspace.stack} is locked: {lock.describe()}",
                    argv=exc.argv,
                    exit_code=exc.exit_code,
                    tail=exc.tail,
                    hint=f"wait for the holder to finish; if it is dead: terraform force-unlock {lock.id}",
                ) from exc
            if looks_transient("\n".join(exc.tail)):
                exc.transient = True
            raise
