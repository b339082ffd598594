"""A small proxy in front of the Docker engine's unix socket that sees (and can hold) chosen API calls.

A test points a DockerHost block at `proxy.base_url` (a unix socket of its own: the flow treats it as any
unix:// engine, registry credentials included). Each request is named by a rule: its method and path,
without the API version prefix, a container's (or exec's) id or name as `*`: `POST /containers/*/start`,
`POST /containers/create`, `GET /containers/*/json`. `seen[rule]` is set when such a request ARRIVES;
`hold(rule)` keeps those requests from the engine until `release(rule)` forwards them or `drop(rule)`
closes their connection unforwarded (the engine never gets them, as when the client died first). Leaving
the proxy drops whatever is still held.

Only the client's side is parsed, to find where each request of a keep-alive connection starts; the
engine's answers are relayed byte for byte, so streamed (pull progress, logs) and hijacked (attach, exec:
`Upgrade: tcp`) connections pass unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import BinaryIO

_VERSION = re.compile(r"^/v\d+(\.\d+)?(?=/)")
_OBJECT = re.compile(r"^/(containers|exec)/(?!create$|json$|prune$)[^/]+")
CHUNK = 65536


def rule_of(method: str, target: str) -> str:
    """`POST /v1.47/containers/3f2a/start?x=1` -> `POST /containers/*/start`."""
    path = _VERSION.sub("", target.partition("?")[0])
    return f"{method} {_OBJECT.sub(lambda m: f'/{m[1]}/*', path)}"


@dataclass
class _Gate:
    opened: threading.Event = field(default_factory=threading.Event)
    forward: bool = True


class SlowDocker:
    """`with SlowDocker("unix:///path/docker.sock") as proxy:` ... `proxy.base_url` for the block."""

    def __init__(self, upstream: str) -> None:
        if not upstream.startswith("unix://"):
            raise ValueError(f"SlowDocker proxies a unix:// engine, not {upstream}")
        self.upstream = upstream.removeprefix("unix://")
        self._dir = tempfile.mkdtemp(prefix="slow-docker-")
        self.path = os.path.join(self._dir, "docker.sock")
        self.seen: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.held: defaultdict[str, list[str]] = defaultdict(list)  # rule -> paths held (or still held)
        self._gates: dict[str, _Gate] = {}
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True, name="slow-docker")

    @property
    def base_url(self) -> str:
        return f"unix://{self.path}"

    def hold(self, rule: str) -> threading.Event:
        """Hold every request of `rule` until release/drop; returns the (cleared) seen event."""
        with self._lock:
            self._gates[rule] = _Gate()
            self.seen[rule].clear()
        return self.seen[rule]

    def release(self, rule: str) -> None:
        self._open(rule, forward=True)

    def drop(self, rule: str) -> None:
        self._open(rule, forward=False)

    def _open(self, rule: str, forward: bool) -> None:
        with self._lock:
            gate = self._gates.pop(rule, None)
        if gate:
            gate.forward = forward
            gate.opened.set()

    def _arrived(self, rule: str, target: str) -> _Gate | None:
        with self._lock:
            self.counts[rule] += 1
            gate = self._gates.get(rule)
            if gate:
                self.held[rule].append(target)
            self.seen[rule].set()
            return gate

    # --- connections ------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed on exit
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="slow-docker-conn").start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.update(socks)

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._sockets.discard(sock)
            try:  # shutdown first: close() alone waits for the makefile reader of the socket
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _serve(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._track(client, engine)
        try:
            engine.connect(self.upstream)
        except OSError:
            self._close(client, engine)
            return
        answers = threading.Thread(target=self._pipe_raw, args=(engine, client), daemon=True)
        answers.start()
        reader = client.makefile("rb")
        ended = False
        try:
            ended = self._requests(reader, engine)
            if ended:  # the client is done sending; the engine's answer still flows back
                engine.shutdown(socket.SHUT_WR)
        except OSError:
            ended = False
        finally:
            reader.close()
            if not ended:
                self._close(client, engine)

    def _requests(self, reader: BinaryIO, engine: socket.socket) -> bool:
        """Forward the client's requests one by one, holding those of a held rule. True at the end of the
        client's stream; False when a held request was dropped (the connection is to be closed)."""
        while True:
            head = _read_head(reader)
            if not head:
                return True
            method, target = head[0].split(b" ")[:2]
            gate = self._arrived(rule_of(method.decode(), target.decode()), target.decode())
            if gate:
                gate.opened.wait()
                if not gate.forward:
                    return False
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.decode().partition(":") for line in head[1:])
            }
            engine.sendall(b"\r\n".join(head) + b"\r\n\r\n")
            _forward_body(reader, engine, headers)
            if "upgrade" in headers:  # hijacked (attach, exec start): raw from here on
                while data := reader.read1(CHUNK):
                    engine.sendall(data)
                return True

    def _pipe_raw(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        self._close(dst, src)

    def __enter__(self) -> SlowDocker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            rules = list(self._gates)
        for rule in rules:
            self.drop(rule)
        self._listener.close()
        with self._lock:
            socks = list(self._sockets)
        self._close(*socks)
        shutil.rmtree(self._dir, ignore_errors=True)


def _read_head(reader: BinaryIO) -> list[bytes]:
    """The request line and header lines (without CRLF); [] at the end of the connection."""
    lines: list[bytes] = []
    while True:
        line = reader.readline(CHUNK)
        if not line:
            return []
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                return lines
            continue  # blank lines between requests
        lines.append(line)


def _forward_body(reader: BinaryIO, engine: socket.socket, headers: dict[str, str]) -> None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.readline(CHUNK)
            engine.sendall(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    line = reader.readline(CHUNK)
                    engine.sendall(line)
                    if line in (b"\r\n", b"\n", b""):
                        return
            _copy(reader, engine, size + 2)  # the chunk and its CRLF
    _copy(reader, engine, int(headers.get("content-length") or 0))


def _copy(reader: BinaryIO, engine: socket.socket, length: int) -> None:
    while length > 0:
        data = reader.read(min(length, CHUNK))
        if not data:
            raise OSError("the client closed mid-body")
        engine.sendall(data)
        length -= len(data)
