"""Pytest plugin: a stand-in ElastiCache configuration endpoint, and twemproxy.

Fixtures:
    config_endpoint: a factory, `config_endpoint(nodes, legacy=False)`, that
        starts a `ConfigEndpoint` on a free port (stopped after the test).
    nutcracker: a factory, `nutcracker(processes, **options)`, that starts
        twemproxy over memcached processes with a generated YAML config.
        Missing binary: skipped, or failed under CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from memcached_fixtures import (
    MemcachedProcess,
    _die_with_parent,
    _unavailable,
    terminate,
    wait_until_listening,
)
from ports import free_port

__all__ = ["ConfigEndpoint", "NutcrackerProcess"]


class ConfigEndpoint:
    """A stand-in for AWS ElastiCache's configuration endpoint, speaking its exact protocol.

    AWS's endpoint is a memcached node that also answers `config get cluster`
    (engine 1.4.14 and later) with

        CONFIG cluster 0 <length>\\r\\n<version>\\n<host>|<ip>|<port> ...\\n\\r\\nEND\\r\\n

    and, on older engines, the same body as the value of the key
    `AmazonElastiCache:cluster` (`get AmazonElastiCache:cluster`). This server
    answers exactly those two questions, in either mode, and `ERROR` to any
    other command, as memcached does. The nodes behind it are real memcached
    processes the test starts; the test changes the list with `set_nodes`,
    which bumps the version as ElastiCache does.

    Args:
        nodes: the memcached processes to list.
        legacy: behave like an engine before 1.4.14 (`config` is an unknown command).
    """

    def __init__(self, nodes: Sequence[MemcachedProcess], *, legacy: bool = False) -> None:
        self.legacy = legacy
        self.version = 0
        self.body: bytes = b""
        self.malformed: bytes | None = None
        self.asked = 0
        self.set_nodes(nodes)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"memcached+discovery://127.0.0.1:{self.port}"

    def set_nodes(self, nodes: Sequence[MemcachedProcess]) -> None:
        """List these nodes from now on, under the next version number."""
        self.version += 1
        # ElastiCache lists host names; these stand-ins use "localhost" as the name and
        # 127.0.0.1 as the address, so a client that connected by name would still work.
        entries = " ".join(f"localhost|{p.host}|{p.port}" for p in nodes)
        self.body = f"{self.version}\n{entries}\n".encode()
        self.malformed = None

    def answer_garbage(self, body: bytes) -> None:
        """Answer with this malformed body (framed as a proper reply) until `set_nodes`."""
        self.malformed = body

    def _reply(self, head: bytes) -> bytes:
        body = self.malformed if self.malformed is not None else self.body
        # The announced length is what ElastiCache sends; clients must not rely on it.
        return b"%b 0 %d\r\n%b\r\nEND\r\n" % (head, len(body), body)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._connections.append(conn)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while not self._stopped.is_set():
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    self.asked += 1
                    if line == b"config get cluster" and not self.legacy:
                        conn.sendall(self._reply(b"CONFIG cluster"))
                    elif line == b"get AmazonElastiCache:cluster" and self.legacy:
                        conn.sendall(self._reply(b"VALUE AmazonElastiCache:cluster"))
                    elif line.startswith((b"get ", b"gets ")):
                        conn.sendall(b"END\r\n")
                    else:
                        conn.sendall(b"ERROR\r\n")

    def stop(self) -> None:
        """Stop listening: the endpoint is unreachable (connections are refused)."""
        self._stopped.set()
        # Closing a socket does not wake a thread blocked in accept() or recv() on it;
        # shutting it down does, so the threads end now rather than at a join's timeout.
        for sock in [self._listener, *self._connections]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(2)
        for thread in self._threads:
            thread.join(2)
        assert not self._thread.is_alive() and not any(t.is_alive() for t in self._threads)

    def __repr__(self) -> str:
        return f"ConfigEndpoint(port={self.port}, version={self.version})"


@pytest.fixture
def config_endpoint() -> Iterator[Callable[..., ConfigEndpoint]]:
    started: list[ConfigEndpoint] = []

    def start(nodes: Sequence[MemcachedProcess], *, legacy: bool = False) -> ConfigEndpoint:
        endpoint = ConfigEndpoint(nodes, legacy=legacy)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


NUTCRACKER = os.environ.get("NUTCRACKER_BIN") or shutil.which("nutcracker") or "/usr/sbin/nutcracker"


class NutcrackerProcess:
    """twemproxy (`nutcracker`) on 127.0.0.1 over memcached processes, controlled by its PID.

    Args:
        backends: the memcached processes of its one pool.
        hash: twemproxy's key hash (`fnv1a_64`, `murmur`, ...).
        distribution: `ketama` (consistent), `modula` or `random`.
        server_failure_limit: failures before twemproxy ejects a server (auto_eject_hosts).
    """

    def __init__(
        self,
        backends: Sequence[MemcachedProcess],
        *,
        hash: str = "fnv1a_64",
        distribution: str = "ketama",
        timeout_ms: int = 400,
    ) -> None:
        self.backends = list(backends)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.stats_port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="nutcracker-"))
        servers = "\n".join(f"    - {p.host}:{p.port}:1 node{i}" for i, p in enumerate(self.backends))
        self.config = self._dir / "nutcracker.yml"
        self.config.write_text(
            "memo:\n"
            f"  listen: {self.host}:{self.port}\n"
            f"  hash: {hash}\n"
            f"  distribution: {distribution}\n"
            f"  timeout: {timeout_ms}\n"
            "  preconnect: false\n"
            "  auto_eject_hosts: false\n"
            "  server_connections: 1\n"
            "  servers:\n"
            f"{servers}\n"
        )
        self.log_path = self._dir / "nutcracker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"memcached://{self.address}?proxy=twemproxy"

    def argv(self) -> list[str]:
        return [
            NUTCRACKER,
            "-c",
            str(self.config),
            "-s",
            str(self.stats_port),
            "-a",
            self.host,
            "-o",
            str(self.log_path),
            "-v",
            "5",
        ]

    def start(self, timeout: float = 5.0) -> NutcrackerProcess:
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        problem = wait_until_listening(self.proc, self.host, self.port, timeout)
        if problem is not None:
            self.stop()
            raise RuntimeError(f"nutcracker {problem}: {self.log()[-2000:]}")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"NutcrackerProcess(port={self.port}, backends={len(self.backends)})"


@pytest.fixture
def nutcracker() -> Iterator[Callable[..., NutcrackerProcess]]:
    started: list[NutcrackerProcess] = []

    def start(backends: Sequence[MemcachedProcess], **options: object) -> NutcrackerProcess:
        if not (os.path.isfile(NUTCRACKER) and os.access(NUTCRACKER, os.X_OK)):
            _unavailable(
                f"twemproxy not found ({NUTCRACKER}); install it (apt-get install nutcracker) "
                "or set NUTCRACKER_BIN"
            )
        proxy = NutcrackerProcess(backends, **options)  # type: ignore[arg-type]
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        with contextlib.suppress(Exception):
            proxy.cleanup()
