from __future__ import annotations

import base64
import json
import logging
import pickle
import sys
import threading
from urllib.parse import quote, quote_plus

import pytest

from tools.errors import (
    InvalidInput,
    NotificationFailed,
    PushFailed,
    RegistryAuthError,
    StateLocked,
    TerraformError,
    ToolError,
    is_transient,
    looks_transient,
)
from tools.redact import (
    MASK,
    RedactingFilter,
    redact,
    redact_argv,
    register_secret,
    registered,
    require_secret_length,
)


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


# --- the forms of a secret (issue 15.4) -------------------------------------------------------------
def _secret(tag: str) -> str:
    import uuid

    return f's3cr/t+{tag} ü&={uuid.uuid4().hex[:8]}"\\'


def test_each_line_of_a_multiline_secret_is_masked() -> None:
    key = "\n".join(
        [
            "-----BEGIN KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "bk9wZXJhdGlvbmFsLWtleS1saW5l",
            "-----END KEY-----",
        ]
    )
    register_secret(key)
    for line in key.splitlines():
        assert redact(f"log: {line}") == f"log: {MASK}", line


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda s: base64.b64encode(s.encode()).decode(), id="base64"),
        pytest.param(lambda s: base64.b64encode(s.encode()).decode().rstrip("="), id="base64-unpadded"),
        pytest.param(lambda s: base64.urlsafe_b64encode(s.encode()).decode(), id="base64-urlsafe"),
        pytest.param(
            lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="), id="urlsafe-unpadded"
        ),
        pytest.param(lambda s: quote(s, safe=""), id="url-quote"),
        pytest.param(lambda s: quote(s), id="url-quote-path"),
        pytest.param(lambda s: quote_plus(s), id="url-quote-plus"),
        pytest.param(lambda s: json.dumps(s)[1:-1], id="json-escaped"),
        pytest.param(lambda s: json.dumps(s, ensure_ascii=False)[1:-1], id="json-escaped-unicode"),
    ],
)
def test_every_encoded_form_is_masked(encode) -> None:
    secret = _secret("form")
    register_secret(secret)
    text = f"before {encode(secret)} after"
    assert encode(secret) not in redact(text)
    assert redact(text).startswith("before ") and redact(text).endswith(" after")


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:", "devops:"])
def test_base64_of_a_secret_inside_a_larger_blob_is_masked(prefix: str) -> None:
    """A docker config's `auth` is base64("user:password"): the password's part of it is masked."""
    secret = _secret("blob")
    register_secret(secret)
    blob = base64.b64encode(f"{prefix}{secret}".encode()).decode()
    assert redact(blob) != blob and "***" in redact(blob)


def test_base64_of_each_line_and_of_the_whole_multiline_value() -> None:
    value = "line-one-secret-4f1\nline-two-secret-9a2"
    register_secret(value)
    for piece in (value, *value.splitlines()):
        assert redact(base64.b64encode(piece.encode()).decode()) == MASK


def test_tracebacks_and_exception_messages_are_masked_by_the_filter() -> None:
    secret = _secret("trace")
    register_secret(secret)
    try:
        raise RuntimeError(f"connect failed for https://u:{quote(secret, safe='')}@host/")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert quote(secret, safe="") not in text and "RuntimeError" in text and MASK in text


def test_stack_info_is_masked() -> None:
    secret = _secret("stack")
    register_secret(secret)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None, sinfo=f"frame {secret}")
    RedactingFilter().filter(record)
    assert secret not in record.stack_info


def test_registration_is_thread_safe() -> None:
    values = [f"thread-secret-{i:04d}-{'x' * 8}" for i in range(200)]
    threads = [threading.Thread(target=register_secret, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(values) <= registered()
    text = " ".join(values)
    assert redact(text) == " ".join([MASK] * len(values))


def test_secrets_shorter_than_the_minimum_are_refused_where_blocks_are_created() -> None:
    assert require_secret_length("long-enough", "x") == "long-enough"
    assert require_secret_length(None, "x") is None
    with pytest.raises(InvalidInput, match="at least 8 characters"):
        require_secret_length("abc", "DEVOPS_REGISTRY_PASSWORD")


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DEVOPS_REGISTRY_PASSWORD", "short"),
        ("DEVOPS_VAULT_PASSWORD", "vault"),
        ("DEVOPS_APP_SECRETS", '{"PROJECT_DB_PASSWORD": "pw"}'),
    ],
)
def test_bootstrap_refuses_a_short_secret_before_saving_anything(variable: str, value: str) -> None:
    from blocks.bootstrap import bootstrap

    environ = {
        "DEVOPS_REGISTRY": "127.0.0.1:5000",
        "DEVOPS_REGISTRY_PASSWORD": "registry-password-ok",
        "DEVOPS_VAULT_PASSWORD": "vault-password-ok",
        variable: value,
    }
    with pytest.raises(InvalidInput, match=r"at least 8 characters"):
        bootstrap(environ)  # raises before the first save: no Prefect server is needed


def test_the_webhook_url_is_a_secret_value_of_the_notification_block() -> None:
    from blocks import slack_webhook

    url = "https://hooks.example.internal/services/T000/B000/" + _secret("hook").replace("/", "x")[:12]
    block = slack_webhook(url)
    assert block.url == "{{webhook_url}}"
    assert url not in block.model_dump_json() and url not in repr(block)
    assert block._build_request_args("body", "subject")["url"] == url  # substituted at send time
    assert url not in redact(f"POST {url} -> 500")
    with pytest.raises(InvalidInput, match="http"):
        slack_webhook("file:///etc/passwd")


def test_notification_failed_is_permanent_and_names_no_url() -> None:
    err = NotificationFailed("drift notification through block 'devops-alerts' failed: HTTP 500")
    assert not is_transient(err) and "http" not in str(err).replace("HTTP", "")


@pytest.mark.parametrize(
    ("text", "auth"),
    [
        ('Get "http://127.0.0.1:58401/v2/": dial tcp 127.0.0.1:58401: connect: connection refused', False),
        ("login attempt to http://127.0.0.1:5000/v2/ failed with status: 401 Unauthorized", True),
        ("received unexpected HTTP status: 401", True),
        ("denied: requested access to the resource is denied", True),
        ("received unexpected HTTP status: 500 Internal Server Error", False),
    ],
)
def test_a_registry_error_is_an_auth_error_only_when_the_registry_says_so(text: str, auth: bool) -> None:
    # a port number such as 58401 once made a down registry look like a credentials problem
    from tools.docker_engine import _registry_error

    err = _registry_error(text, "login to 127.0.0.1:58401")
    assert isinstance(err, RegistryAuthError) is auth and isinstance(err, PushFailed), repr(err)
    assert is_transient(err) is not auth  # a down or failing registry is retried; refused credentials are not
