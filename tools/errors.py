"""The one error hierarchy of devops-flows.

    ToolError                     a tool ran and failed; carries redacted argv, exit code, output tail
    ├── ProcessTimeout            our own deadline passed; the process group was signalled and reaped
    ├── ProcessCancelled          the run was cancelled; the process group was signalled and reaped
    ├── ToolMissing               a required executable is not installed or too old
    ├── BuildFailed               the builder container (sbt) exited non-zero
    ├── ImageBuildFailed          `docker build` of the app image failed
    ├── RegistryError             a registry operation through the Docker engine failed
    │   ├── PushFailed            the registry refused or was unreachable during a login, lookup or push
    │   │   └── RegistryAuthError wrong credentials (any registry operation): permanent, never retried
    │   └── PullFailed            the registry refused or was unreachable during a pull
    ├── DeployFailed              the new container did not become healthy (previous one restored)
    │   └── AppDown               ... and the previous one could not be restored: the app is down
    ├── BakeFailed                `packer validate/build` failed
    ├── TerraformError            any terraform sub-command failed
    │   ├── StateLocked           the state lock is held by someone else
    │   ├── TerraformStillRunning a dead run's terraform still works on the stack after our wait
    │   ├── ApprovalFailed        an approved plan could not be applied as approved (stored plan differs)
    │   └── PolicyDenied          a policy rule denied the plan: nothing applied (names rules and messages)
    ├── AnsibleRunFailed          hosts failed or were unreachable (names them and their tasks)
    ├── PreflightFailed           a check before any change (validate, syntax-check, lint) found problems
    └── AwsError                  an AWS API call failed (boto3)
    InvalidInput (ValueError)     a parameter was rejected before any side effect
    NotificationFailed            a notification block could not deliver (message names no URL)

`is_transient(exc)` tells a task's `retry_condition_fn` whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Sequence

TAIL_LINES = 40


class InvalidInput(ValueError):
    """A parameter or input file was rejected before any side effect. The message says what is valid."""


class ToolError(RuntimeError):
    """A tool failed. `argv` is already redacted; `tail` holds its last output lines (redacted)."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        exit_code: int | None = None,
        tail: Sequence[str] = (),
        hint: str | None = None,
        transient: bool | None = None,
    ) -> None:
        self.message = message
        self.argv = list(argv)
        self.exit_code = exit_code
        self.tail = list(tail)[-TAIL_LINES:]
        self.hint = hint
        if transient is not None:
            self.transient = transient
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.message]
        if self.argv:
            parts.append(f"command: {' '.join(self.argv)}")
        if self.exit_code is not None:
            parts.append(f"exit code: {self.exit_code}")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        if self.tail:
            parts.append("last output lines:\n" + "\n".join(self.tail))
        return "\n".join(parts)

    def __reduce__(self) -> tuple:  # keep keyword state across pickling (Prefect persists exceptions)
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ToolError], state: dict) -> ToolError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    RuntimeError.__init__(err, str(err))
    return err


class ProcessTimeout(ToolError):
    """The process outlived its deadline; its whole process group was stopped."""


class ProcessCancelled(ToolError):
    """The run was cancelled while the process ran; its whole process group was stopped."""


class ToolMissing(ToolError):
    """A required executable is missing or older than supported."""


class BuildFailed(ToolError):
    """The builder container exited non-zero."""


class ImageBuildFailed(ToolError):
    """`docker build` of the application image failed."""


class RegistryError(ToolError):
    """A registry operation through the Docker engine failed (tools/docker_engine/translate.py)."""


class PushFailed(RegistryError):
    """The login, lookup or push failed: the registry refused or was unreachable."""


class PullFailed(RegistryError):
    """The pull failed: the registry refused or was unreachable (refused credentials: RegistryAuthError)."""


class RegistryAuthError(PushFailed):
    """The registry rejected the credentials. Permanent: retrying cannot help."""

    transient = False


class DeployFailed(ToolError):
    """The new container did not become healthy; the previous one was restored."""


class AppDown(DeployFailed):
    """The new container failed and the previous one could not be restored: nothing serves the app.
    The message says so and why; deploy-app sends the failure notification."""


class BakeFailed(ToolError):
    """Packer failed to validate or build the image."""


class TerraformError(ToolError):
    """A terraform sub-command failed."""


class StateLocked(TerraformError):
    """The Terraform state lock is held by another process."""


class TerraformStillRunning(TerraformError):
    """A terraform process on this host (left by a dead run) still works on the stack's state after the
    backend's `running_wait_seconds`: no second apply is started beside it. The message names its pid."""


class ApprovalFailed(TerraformError):
    """The approved plan is not the stored one (checksum differs): nothing was applied."""


class PolicyDenied(TerraformError):
    """A plan policy (infra/policies) denied the plan before any apply: the plan was discarded, nothing
    stored or applied. `denials` holds (rule, message) pairs; the message names them all."""

    def __init__(self, message: str, *, denials: Sequence[tuple[str, str]] = (), **kwargs) -> None:  # noqa: ANN003
        self.denials = [tuple(d) for d in denials]
        super().__init__(message, **kwargs)


class AnsibleRunFailed(ToolError):
    """The playbook failed on some hosts or some were unreachable."""


class PreflightFailed(ToolError):
    """A check that runs before any change (terraform validate, ansible syntax-check and lint, hadolint)
    found problems: nothing was changed. `tail` holds the tool's findings."""


class AwsError(ToolError):
    """An AWS API call failed."""


_TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "connection aborted",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "service unavailable",
    "too many requests",
    "throttl",
    "requestlimitexceeded",
    "internal server error",
    "bad gateway",
    "gateway timeout",
    "eof",
    " 500 ",
    " 502 ",
    " 503 ",
    " 504 ",
)


def looks_transient(text: str) -> bool:
    """Heuristic on a tool's own message: network trouble and 5xx are transient."""
    lowered = f" {text.lower()} "
    return any(marker in lowered for marker in _TRANSIENT_MARKERS)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the failed step can help. Auth errors, bad input and locks are permanent."""
    if isinstance(
        exc, (InvalidInput, RegistryAuthError, StateLocked, TerraformStillRunning, ProcessCancelled)
    ):
        return False
    if isinstance(exc, ToolError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))


def retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn
    """`retry_condition_fn` for Prefect tasks: retry only transient tool errors."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_transient(exc)
    return False


class InstanceRefreshFailed(ToolError):
    """The auto scaling group's instances could not all be replaced healthy: which batch, and why."""


class RolloutFailed(ToolError):
    """ami-rollout changed the launch template, a later step failed, and the previous AMI was re-applied."""


class NotificationFailed(RuntimeError):
    """A notification could not be delivered. The message names the block and the reason (HTTP status or
    error type) but never the webhook URL, which is itself a credential."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)
