"""ElastiCache auto-discovery: ask a cluster's configuration endpoint which nodes it has.

An ElastiCache for Memcached cluster has a configuration endpoint that answers
`config get cluster` (engine 1.4.14 and later) or, on older engines, a `get`
of the key `AmazonElastiCache:cluster`, with

    CONFIG cluster 0 <length>\\r\\n
    <version>\\n
    <host>|<ip>|<port> <host>|<ip>|<port> ...\\n
    \\r\\n
    END\\r\\n

(`VALUE AmazonElastiCache:cluster 0 <length>` heads the legacy reply). The
reply is read up to its `END` line, never by the announced length, which
endpoints have been seen to get wrong. The version goes up whenever nodes are
added or removed.

`ClusterDiscovery` asks once at start and then every `interval` seconds from a
daemon thread. A thread, not an asyncio task: the node list is shared by sync
and async callers of one backend, and a task would belong to one event loop
(and die with it at the end of every `asyncio.run`), while sync-only programs
have no loop at all. The thread does blocking I/O with short timeouts, off every
caller's path, so neither a slow endpoint nor a stalled DNS lookup of its name
ever holds a caller up; it is a daemon, so it never delays interpreter exit,
and it holds only a weak reference to its owner, so a backend nobody uses any
more is collected and the thread ends. After `fork()` the child starts its own
thread the next time the owner asks (`ensure_running`).

When the endpoint cannot be reached or answers something unreadable, the last
node list stays in use; the failure is counted (`stats()`) and logged at most
once a minute.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from .._errors import BackendError, ConfigurationError
from ._checks import check_host

__all__ = ["ClusterConfig", "ClusterDiscovery", "DiscoveryError", "Node", "fetch_config", "parse_config"]

logger = logging.getLogger("memo")

CONFIG_COMMAND = b"config get cluster\r\n"
LEGACY_KEY = b"AmazonElastiCache:cluster"
LEGACY_COMMAND = b"get " + LEGACY_KEY + b"\r\n"
#: A reply larger than this is not a node list (1,000 nodes take about 60 KB).
MAX_REPLY = 1024 * 1024
#: Seconds between two log lines about failed questions.
LOG_EVERY = 60.0
#: After a failed first attempt, how soon to ask again (doubling up to the interval).
FIRST_RETRY = 0.5


class DiscoveryError(BackendError):
    """The configuration endpoint could not be asked, or its answer is not a node list."""


class Node(NamedTuple):
    """One cluster node as the configuration endpoint lists it."""

    host: str
    ip: str
    port: int

    @property
    def id(self) -> str:
        """The node's id for routing: its host name (stable when its address changes) and port."""
        name = self.host or self.ip
        return f"[{name}]:{self.port}" if ":" in name else f"{name}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """Where to connect: the listed IP address (no DNS lookup) or else the host name."""
        return (self.ip or self.host, self.port)


class ClusterConfig(NamedTuple):
    """A configuration endpoint's answer: the config version and the nodes."""

    version: int
    nodes: tuple[Node, ...]


def parse_config(reply: bytes) -> ClusterConfig:
    """Parse a whole `config get cluster` or legacy `get` reply, `END\\r\\n` included.

    Raises:
        DiscoveryError: not a cluster configuration.
    """
    header, _, rest = reply.partition(b"\r\n")
    fields = header.split(b" ")
    legacy = fields[:2] == [b"VALUE", LEGACY_KEY]
    if not (fields[:2] == [b"CONFIG", b"cluster"] or legacy) or len(fields) != 4:
        raise DiscoveryError(f"not a cluster configuration: {header[:100]!r}")
    if not rest.endswith(b"END\r\n"):
        raise DiscoveryError("cluster configuration without its END line")
    body = rest[: -len(b"END\r\n")]
    lines = [line.strip() for line in body.split(b"\n")]
    lines = [line for line in lines if line]
    if len(lines) != 2:
        raise DiscoveryError(f"cluster configuration has {len(lines)} lines, expected a version and nodes")
    try:
        version = int(lines[0])
    except ValueError:
        raise DiscoveryError(f"cluster configuration version {lines[0][:40]!r} is not a number") from None
    nodes: list[Node] = []
    for entry in lines[1].split():
        parts = entry.split(b"|")
        if len(parts) != 3:
            raise DiscoveryError(f"node {entry[:100]!r} is not host|ip|port")
        try:
            host, ip = parts[0].decode("ascii"), parts[1].decode("ascii")
            port = int(parts[2])
        except (UnicodeDecodeError, ValueError):
            raise DiscoveryError(f"node {entry[:100]!r} is not host|ip|port") from None
        if not (host or ip) or not 0 < port < 65536 or not (host + ip).isprintable():
            raise DiscoveryError(f"node {entry[:100]!r} is not host|ip|port")
        try:
            for name in filter(None, (host, ip)):
                check_host(name, "node")
        except ConfigurationError as exc:  # a name no lookup can take: keep the last list
            raise DiscoveryError(f"node {entry[:100]!r}: {exc}") from None
        nodes.append(Node(host, ip, port))
    if not nodes:
        raise DiscoveryError("cluster configuration lists no nodes")
    if len({node.id for node in nodes}) != len(nodes):
        raise DiscoveryError(f"cluster configuration lists a node twice: {lines[1][:200]!r}")
    return ClusterConfig(version, tuple(nodes))


def _read_reply(sock: socket.socket, deadline: float) -> bytes:
    """Read one reply: up to an `END` line, or a single error line."""
    buf = b""
    while True:
        if buf.endswith(b"\r\n"):
            if buf == b"END\r\n" or buf.endswith(b"\r\nEND\r\n"):
                return buf
            if buf.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
                return buf
        if len(buf) > MAX_REPLY:
            raise DiscoveryError(f"configuration reply longer than {MAX_REPLY} bytes without END")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DiscoveryError("configuration endpoint did not finish its reply in time")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise DiscoveryError("configuration endpoint closed the connection")
        buf += chunk


def fetch_config(
    host: str,
    port: int,
    *,
    tls_context: ssl.SSLContext | None = None,
    connect_timeout: float = 1.0,
    timeout: float = 1.0,
) -> ClusterConfig:
    """Ask a configuration endpoint for the cluster's nodes (blocking, bounded).

    `config get cluster` first; an `ERROR` reply (engines before 1.4.14 do
    not know the command) is followed by `get AmazonElastiCache:cluster` on
    the same connection.

    Raises:
        DiscoveryError: unreachable, timed out, or not a cluster configuration.
    """
    try:
        with socket.create_connection((host, port), timeout=connect_timeout) as raw:
            sock: socket.socket = raw
            if tls_context is not None:
                sock = tls_context.wrap_socket(raw, server_hostname=host)
            deadline = time.monotonic() + timeout
            sock.sendall(CONFIG_COMMAND)
            reply = _read_reply(sock, deadline)
            if reply == b"ERROR\r\n":
                sock.sendall(LEGACY_COMMAND)
                reply = _read_reply(sock, deadline)
                if reply == b"END\r\n":
                    raise DiscoveryError(
                        f"{host}:{port} is not an ElastiCache configuration endpoint "
                        "(it knows neither `config get cluster` nor AmazonElastiCache:cluster)"
                    )
            if tls_context is not None:
                sock.close()
    except (OSError, ssl.SSLError) as exc:
        raise DiscoveryError(f"cannot ask configuration endpoint {host}:{port}: {exc}") from exc
    return parse_config(reply)


class ClusterDiscovery:
    """Keep a cluster's node list fresh, asking its configuration endpoint every `interval` s.

    Args:
        host, port: the configuration endpoint.
        on_change: called (in the discovery thread, or the thread calling
            `refresh`) with each new `ClusterConfig` whose node list differs
            from the last one; it must swap the routing atomically.
        interval: seconds between two questions.
        tls_context: speak TLS to the endpoint.
        connect_timeout, timeout: bounds of one question.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_change: Callable[[ClusterConfig], None],
        *,
        interval: float = 60.0,
        tls_context: ssl.SSLContext | None = None,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.interval = interval
        self._on_change = on_change
        self._tls = tls_context
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self.config: ClusterConfig | None = None
        # Set once the first question got an answer or failed: callers wait for it.
        self.first_attempt = threading.Event()
        self._ask_lock = threading.Lock()  # one question at a time
        self._thread_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._retry = FIRST_RETRY
        self._logged_at = -LOG_EVERY
        self._not_logged = 0
        self.refreshes = 0
        self.changes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None

    def __repr__(self) -> str:
        return f"ClusterDiscovery({self.host}:{self.port}, every {self.interval}s)"

    def ensure_running(self) -> None:
        """Start the background thread unless it runs (again after `close`, or in a forked child).

        Cheap enough for the owner to call whenever it opens a connection.
        """
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._thread_lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_run, args=(weakref.ref(self), self._stop), name="memo-discovery", daemon=True
            )
            self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread and whatever locks it held are not ours."""
        self._ask_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._thread = None

    def refresh(self) -> bool:
        """Ask the endpoint now; return True if the node list changed. Never raises."""
        with self._ask_lock:
            try:
                config = fetch_config(
                    self.host,
                    self.port,
                    tls_context=self._tls,
                    connect_timeout=self._connect_timeout,
                    timeout=self._timeout,
                )
            except DiscoveryError as exc:
                self.failures += 1
                self.last_error = str(exc)
                self._report(str(exc))
                self.first_attempt.set()
                return False
            self.refreshes += 1
            self.last_error = None
            self.last_success = time.monotonic()
            old, self.config = self.config, config
            changed = old is None or set(old.nodes) != set(config.nodes)
            if changed:
                self.changes += 1
                try:
                    self._on_change(config)
                except Exception as exc:  # never kill the thread over a bad list
                    self.failures += 1
                    self.last_error = f"could not apply the node list: {exc!r}"
                    self._report(self.last_error)
                    self.config = old
                    changed = False
            self.first_attempt.set()
            return changed

    def _report(self, error: str) -> None:
        """Log a failure, at most once every LOG_EVERY seconds."""
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            self._not_logged += 1
            return
        kept = (
            "no node list yet" if self.config is None else f"keeping the last {len(self.config.nodes)} nodes"
        )
        more = f"; {self._not_logged} more failures since the last report" if self._not_logged else ""
        logger.warning(
            "memo: auto-discovery from %s:%d failed (%s); %s%s", self.host, self.port, error, kept, more
        )
        self._logged_at, self._not_logged = now, 0

    def next_delay(self) -> float:
        """Seconds until the next question: the interval, sooner while no list is known."""
        if self.config is not None or self._thread is None:
            return self.interval
        delay, self._retry = self._retry, min(self._retry * 2, self.interval)
        return min(delay, self.interval)

    def stats(self) -> dict[str, Any]:
        """Counters and state: what `Cache.stats()`-style reports show about discovery."""
        config = self.config
        age = None if self.last_success is None else time.monotonic() - self.last_success
        return {
            "endpoint": f"{self.host}:{self.port}",
            "interval": self.interval,
            "version": None if config is None else config.version,
            "nodes": [] if config is None else [node.id for node in config.nodes],
            "refreshes": self.refreshes,
            "changes": self.changes,
            "failures": self.failures,
            "last_error": self.last_error,
            "seconds_since_success": age,
        }

    def close(self) -> None:
        """Stop the background thread (it ends within one question's timeout)."""
        with self._thread_lock:
            self._stop.set()
            self._thread = None


def _run(ref: weakref.ref[ClusterDiscovery], stop: threading.Event) -> None:
    """The discovery thread: ask at once, then every interval, until stopped or orphaned."""
    delay = 0.0
    while not stop.wait(delay):
        discovery = ref()
        if discovery is None:
            return
        discovery.refresh()
        delay = discovery.next_delay()
        del discovery  # hold no strong reference while sleeping
