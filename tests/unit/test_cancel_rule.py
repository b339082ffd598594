"""What counts as a cancel: after it, nothing may start a change (no rollback apply in a dying process)."""

from __future__ import annotations

import signal

from prefect.exceptions import TerminationSignal

from tasks.task_runner import is_cancel
from tools.errors import AwsError, ProcessCancelled, RolloutFailed


def _raised_from(cause: BaseException, outer: Exception) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise outer from exc
    except Exception as caught:  # noqa: BLE001
        return caught


def test_termination_interrupt_and_a_stopped_tool_are_cancels_even_when_wrapped() -> None:
    assert is_cancel(TerminationSignal(signal.SIGTERM))
    assert is_cancel(KeyboardInterrupt())
    assert is_cancel(ProcessCancelled("terraform apply was cancelled"))
    assert is_cancel(_raised_from(TerminationSignal(signal.SIGTERM), AwsError("describe_instances failed")))


def test_a_failure_is_not_a_cancel() -> None:
    assert not is_cancel(None)
    assert not is_cancel(RolloutFailed("batch 1/3 failed its health gate"))
    assert not is_cancel(_raised_from(TimeoutError("gate"), AwsError("describe_instances failed")))
