"""Sockets for tests that need a peer which never accepts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def blackhole(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on `host` whose accept queue is full: a new connect to it hangs until it times out."""
    listener = socket.socket()
    listener.bind((host, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued: list[socket.socket] = []
    try:
        for _ in range(8):
            client = socket.socket()
            client.settimeout(0.2)
            queued.append(client)
            try:
                client.connect((host, port))
            except TimeoutError:
                break
        else:
            pytest.skip("this network stack accepts connections beyond the listen backlog")
        yield port
    finally:
        for client in queued:
            client.close()
        listener.close()
