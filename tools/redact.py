"""Secret redaction. Prefect does not redact logs, so every line we emit passes through here.

Secrets are registered when they are unwrapped from a block (`register_secret`), together with every
form in which they can show up in text (`tools.redact_forms`: each line of a multi-line value, base64,
URL- and JSON-encoded); `redact` replaces every registered form (longest first) with `***`. A logging
filter applies the same to every record that reaches a handler, its message and its formatted traceback
(exception messages included), so even a library that logs or raises with a secret is covered once the
secret is registered. Registration is thread-safe.

Blocks refuse secrets shorter than `MIN_SECRET_LEN` (`require_secret_length`): a 3-character secret
could not be masked without masking ordinary words.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from tools.errors import InvalidInput
from tools.redact_forms import MIN_FORM, forms

MASK = "***"
MIN_SECRET_LEN = 8  # enforced where blocks are created
_MIN_LEN = MIN_FORM  # shorter values would mask ordinary words; such secrets are rejected by the blocks
_lock = threading.Lock()
_secrets: set[str] = set()
_forms: tuple[str, ...] = ()  # every form of every secret, longest first

__all__ = [
    "MASK",
    "MIN_SECRET_LEN",
    "RedactingFilter",
    "redact",
    "redact_argv",
    "register_secret",
    "registered",
    "require_secret_length",
]


def register_secret(value: str | None) -> str | None:
    """Remember a secret value (and its encoded forms) so it is masked wherever we log or raise."""
    global _forms
    if value and len(value) >= _MIN_LEN:
        with _lock:
            if value not in _secrets:
                _secrets.add(value)
                _forms = tuple(sorted({*_forms, *forms(value)}, key=len, reverse=True))
        _install_filter()
    return value


def require_secret_length(value: str | None, what: str, minimum: int = MIN_SECRET_LEN) -> str | None:
    """`value` unchanged, or InvalidInput when it is shorter than `minimum` (empty/None passes: absent)."""
    if value and len(value) < minimum:
        raise InvalidInput(
            f"{what} is {len(value)} characters long; secrets must have at least {minimum} characters "
            "(a shorter one cannot be masked in logs without masking ordinary words)"
        )
    return value


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Mask every registered secret and its forms (and any `extra` value with its forms) in `text`."""
    values: Iterable[str] = _forms
    extra = [v for v in extra if v and len(v) >= _MIN_LEN]
    if extra:
        values = sorted({*_forms, *(f for v in extra for f in forms(v))}, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_argv(argv: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    extra = list(extra)
    return [redact(arg, extra) for arg in argv]


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's final message, its traceback and its stack."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _forms:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text once set
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def _install_filter() -> None:
    """Attach the filter to every handler that exists now (Prefect's API and console handlers included)."""
    loggers = [logging.getLogger()] + [
        lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
