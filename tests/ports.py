"""A free local TCP port. Its own module: importing tests/conftest.py outside pytest (a served runner of a
test) would point that process's Prefect at the session's next server port, where nothing listens."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
