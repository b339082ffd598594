from __future__ import annotations

import logging
import pickle

from tools.errors import (
    InvalidInput,
    PushFailed,
    RegistryAuthError,
    StateLocked,
    TerraformError,
    ToolError,
    is_transient,
    looks_transient,
)
from tools.redact import MASK, RedactingFilter, redact, redact_argv, register_secret


def test_tool_error_renders_command_exit_code_hint_and_tail() -> None:
    err = TerraformError(
        "terraform plan failed", argv=["terraform", "plan"], exit_code=1, tail=["a", "b"], hint="run init"
    )
    text = str(err)
    assert text.splitlines()[0] == "terraform plan failed"
    assert "command: terraform plan" in text and "exit code: 1" in text and "hint: run init" in text
    assert text.endswith("last output lines:\na\nb")


def test_tail_is_bounded() -> None:
    assert len(ToolError("x", tail=[str(i) for i in range(500)]).tail) == 40


def test_errors_survive_pickling_with_their_fields() -> None:
    err = StateLocked("locked", argv=["terraform", "apply"], exit_code=1, tail=["Lock Info"], hint="wait")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is StateLocked and copy.tail == ["Lock Info"] and str(copy) == str(err)


def test_transient_classification() -> None:
    assert is_transient(PushFailed("push failed", transient=True))
    assert not is_transient(RegistryAuthError("unauthorized", transient=True))
    assert not is_transient(StateLocked("locked"))
    assert not is_transient(InvalidInput("bad"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError())
    assert looks_transient("dial tcp 127.0.0.1:5000: connect: connection refused")
    assert looks_transient("received unexpected HTTP status: 503 Service Unavailable")
    assert not looks_transient("unauthorized: authentication required")


def test_redaction_masks_registered_secrets_longest_first() -> None:
    register_secret("hunter2-long-secret")
    register_secret("hunter2")
    assert redact("a hunter2-long-secret b hunter2") == f"a {MASK} b {MASK}"
    assert redact_argv(["--password=hunter2"]) == [f"--password={MASK}"]
    assert redact("regex chars .*+?") == "regex chars .*+?"


def test_short_values_are_not_registered() -> None:
    register_secret("ab")
    assert redact("ab cab") == "ab cab"


def test_logging_filter_masks_records() -> None:
    register_secret("filter-secret-value")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", ("filter-secret-value",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"token={MASK}"
