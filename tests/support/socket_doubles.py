"""A socket double for the sync connection's tests: no server, the reply given in chunks."""

from __future__ import annotations


class Replies:
    """Records what is sent; answers each recv with the next chunk (then EOF, as a closed socket)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""
