"""A small HTTP proxy in front of moto that sees (and can slow down) chosen AWS calls.

The kill-point tests point their AWS and backend blocks at it. Each request is matched by a rule name:
the query API's `Action` (EC2, Auto Scaling: `CreateLaunchTemplateVersion`) or, for S3, `PUT *.tfstate`
(a Terraform state write) and `PUT *.tflock`. `seen[name]` is set when such a request ARRIVES (before it
is forwarded), so a test knows the call is in flight; `delay(name, seconds)` holds those requests that long
before forwarding them, so the call stays in flight while the test kills the run. `hold(name)` holds them
until `release(name)`: forwarded then, or with `forward=False` dropped (they never reach moto, and the
connection closes without an answer: a write lost with its writer).
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.ports import free_port

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


def rule_of(method: str, path: str, body: bytes) -> str | None:
    """The rule name of a request: `PUT *.tfstate` / `PUT *.tflock` (S3), or the query API's Action."""
    url = urllib.parse.urlsplit(path)
    if method == "PUT" and url.path.endswith(".tfstate"):
        return "PUT *.tfstate"
    if method == "PUT" and url.path.endswith(".tflock"):
        return "PUT *.tflock"
    params = urllib.parse.parse_qs(url.query)
    if method == "POST" and body[:200].find(b"Action=") >= 0:
        params = {**params, **urllib.parse.parse_qs(body.decode(errors="replace"))}
    action = params.get("Action")
    return action[0] if action else None


HOLD_LIMIT_SECONDS = 900  # a held request forgotten by its test goes on after this


@dataclass
class _Gate:
    opened: threading.Event = field(default_factory=threading.Event)
    forward: bool = True


class SlowMoto:
    """`with SlowMoto(upstream) as proxy:` ... `proxy.endpoint` is the URL to give the blocks."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.delays: dict[str, float] = {}
        self.seen: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.gates: dict[str, _Gate] = {}
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="slow-moto")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delay(self, rule: str, seconds: float) -> threading.Event:
        """Hold each request of `rule` `seconds` before forwarding it; returns the (cleared) seen event."""
        with self._lock:
            self.delays[rule] = seconds
            self.seen[rule].clear()
        return self.seen[rule]

    def hold(self, rule: str) -> threading.Event:
        """Hold each request of `rule` until `release(rule)`; returns the (cleared) seen event."""
        with self._lock:
            self.gates[rule] = _Gate()
            self.seen[rule].clear()
        return self.seen[rule]

    def release(self, rule: str, forward: bool = True) -> None:
        """Let the held requests of `rule` go on to moto, or drop them (`forward=False`)."""
        with self._lock:
            gate = self.gates.pop(rule, None)
        if gate:
            gate.forward = forward
            gate.opened.set()

    def clear(self) -> None:
        """No delay and no hold any more: held requests are forwarded."""
        with self._lock:
            self.delays.clear()
            rules = list(self.gates)
        for rule in rules:
            self.release(rule)

    def _arrived(self, rule: str | None) -> tuple[float, _Gate | None]:
        if rule is None:
            return 0.0, None
        with self._lock:
            self.counts[rule] += 1
            self.seen[rule].set()
            return self.delays.get(rule, 0.0), self.gates.get(rule)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                body = self._body()
                wait, gate = proxy._arrived(rule_of(self.command, self.path, body))
                if wait:
                    time.sleep(wait)
                if gate:
                    gate.opened.wait(HOLD_LIMIT_SECONDS)
                    if not gate.forward:
                        self.close_connection = True
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    head = self.command == "HEAD"  # keeps the upstream's Content-Length
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_HEADERS and (head or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if not head:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(payload)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815

        return Handler

    def __enter__(self) -> SlowMoto:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
