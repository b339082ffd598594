"""Secret redaction. Prefect does not redact logs, so every line we emit passes through here.

Secrets are registered when they are unwrapped from a block (`register_secret`); `redact` replaces
every registered value (longest first) with `***`. A logging filter applies the same to every record
that reaches a handler, so even a library that logs a secret is covered once it is registered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

MASK = "***"
_MIN_LEN = 4  # shorter values would mask ordinary words; such secrets are rejected by the blocks
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> str | None:
    """Remember a secret value so that it is masked wherever we log or raise. Returns the value."""
    if value and len(value) >= _MIN_LEN:
        with _lock:
            _secrets.add(value)
        _install_filter()
    return value


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Mask every registered secret (and any `extra` value) in `text`."""
    values = sorted({*registered(), *(v for v in extra if v and len(v) >= _MIN_LEN)}, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_argv(argv: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    extra = list(extra)
    return [redact(arg, extra) for arg in argv]


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactingFilter()


def _install_filter() -> None:
    """Attach the filter to every handler that exists now (Prefect's API and console handlers included)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
