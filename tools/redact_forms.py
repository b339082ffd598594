"""The forms in which a secret can appear in text, each of which `tools.redact` masks.

A secret leaks not only verbatim: a multi-line value (a key, a certificate) is logged line by line, a
Basic-auth header or a docker config carries it base64-encoded (often after `user:`), a URL carries it
percent-encoded, a JSON document carries it escaped. `forms(value)` lists them all:

    verbatim              the value itself, and each line of a multi-line value (lines of >= MIN_FORM chars)
    base64                std and urlsafe, with and without `=` padding, of the whole value and of each line
    base64 inside a blob  the characters that do not depend on what precedes the value (offsets 0, 1, 2),
                          so `base64("user:" + secret)` is masked too
    URL-encoded           quote (no safe chars) and quote_plus
    JSON-escaped          json.dumps without the quotes, ASCII-escaped and not
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

MIN_FORM = 4  # a shorter form would mask ordinary words
_MIN_EMBEDDED = 8  # the stable core of base64 inside a larger blob must be at least this long

__all__ = ["MIN_FORM", "forms"]


def forms(value: str) -> set[str]:
    """Every form of `value` worth masking (verbatim, lines, base64, URL and JSON encodings)."""
    if not value:
        return set()
    pieces = {value}
    lines = [line.strip("\r") for line in value.split("\n")]
    if len(lines) > 1:
        pieces.update(line for line in lines if len(line.strip()) >= MIN_FORM)
    found: set[str] = set()
    for piece in pieces:
        found.add(piece)
        found.update(_base64_forms(piece))
        found.update(_url_forms(piece))
        found.update(_json_forms(piece))
    return {f for f in found if len(f) >= MIN_FORM}


def _base64_forms(piece: str) -> set[str]:
    raw = piece.encode()
    out: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(raw).decode()
        out.update({full, full.rstrip("=")})
        for offset in range(3):  # the value preceded by 0, 1 or 2 other bytes inside a larger blob
            encoded = encode(b"\0" * offset + raw).decode().rstrip("=")
            start = (offset * 8 + 5) // 6 if offset else 0  # skip chars mixing in preceding bytes
            usable = (len(raw) + offset) * 8 // 6  # chars fully determined by the value
            core = encoded[start:usable]
            if len(core) >= _MIN_EMBEDDED:
                out.add(core)
    return out


def _url_forms(piece: str) -> set[str]:
    return {quote(piece, safe=""), quote_plus(piece), quote(piece)}


def _json_forms(piece: str) -> set[str]:
    return {json.dumps(piece)[1:-1], json.dumps(piece, ensure_ascii=False)[1:-1]}
