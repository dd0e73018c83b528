"""Pytest plugin: real memcached processes for the integration tests.

Fixtures:
    memcached_server: one memcached for the whole session. Share it only with
        unique keys; never flush, stop or pause it.
    memcached_url: "memcached://127.0.0.1:<port>" of `memcached_server`.
    memcached_servers: a factory, `memcached_servers(n=1, **options)`, that
        starts `n` processes owned by the calling test (stopped after it);
        use these to kill, pause, restart or count commands.
        Options are those of `MemcachedProcess` (memory_mb, max_item_size,
        tls, verbose).
    memcached_tls_files: (certificate path, key path) of a throwaway
        self-signed certificate for 127.0.0.1 and localhost, made with the
        `openssl` command.

When memcached (or openssl, for TLS) is missing or will not start, the tests
needing it are skipped, or fail when the environment variable CI is set, so a
CI run cannot pass by skipping everything.

Every process is signalled by its own PID, never by name, and whatever is
still running when the session ends is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from ports import free_port

__all__ = ["MemcachedProcess"]

MEMCACHED = os.environ.get("MEMCACHED_BIN") or shutil.which("memcached") or "/usr/bin/memcached"
_STARTED: list[MemcachedProcess] = []


def _find_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


# Looked up here, in the parent: the child runs nothing but the call itself.
_PRCTL = _find_prctl() if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies (Linux).

    Session cleanup does not run when pytest itself is killed (a CI timeout);
    without this the servers would outlive it. Linux ties the signal to the
    thread that started the child, so start processes from the main thread.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI, because a test's real dependency is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error rather than a skip)")
    pytest.skip(reason)


def wait_until_listening(proc: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> str | None:
    """Wait until a started process accepts connections; return what went wrong, or None."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return f"exited with {proc.returncode} (port {port})"
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return None
        except OSError:
            if time.monotonic() > deadline:
                return f"did not accept connections on port {port} within {timeout}s"
            time.sleep(0.01)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process we started, SIGKILL it after 5 s, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class MemcachedStartError(RuntimeError):
    """memcached exited or did not accept connections in time."""


class MemcachedProcess:
    """One memcached process on 127.0.0.1, controlled by its PID.

    Args:
        port: TCP port; a free one is picked when None.
        memory_mb: cache memory (`-m`).
        max_item_size: item size limit in bytes (`-I`); memcached's default
            (1 MiB) when None.
        tls: (certificate, key) paths to serve TLS only (`-Z`).
        verbose: run with `-vv` and log to a file; `commands()` then lists the
            commands the server received, one per request line.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        memory_mb: int = 16,
        max_item_size: int | None = None,
        tls: tuple[str, str] | None = None,
        verbose: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.memory_mb = memory_mb
        self.max_item_size = max_item_size
        self.tls = tls
        self.verbose = verbose
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="memcached-", suffix=".log", delete=False)  # noqa: SIM115
        self._log.close()
        self._paused = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        scheme = "memcached+tls" if self.tls else "memcached"
        return f"{scheme}://{self.address}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def argv(self) -> list[str]:
        argv = [MEMCACHED, "-l", self.host, "-p", str(self.port), "-U", "0", "-m", str(self.memory_mb)]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root without -u
        if self.max_item_size:
            argv += ["-I", str(self.max_item_size)]
            if self.max_item_size < 1024 * 1024:
                # memcached refuses a slab chunk (512 KiB by default) larger than -I.
                argv += ["-o", f"slab_chunk_max={self.max_item_size // 2}"]
        if self.tls:
            cert, key = self.tls
            argv += ["-Z", "-o", f"ssl_chain_cert={cert},ssl_key={key}"]
        if self.verbose:
            argv.append("-vv")
        return argv

    def start(self, timeout: float = 5.0) -> MemcachedProcess:
        """Start memcached and wait until it accepts connections."""
        if self.running:
            return self
        with open(self._log.name, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        self._paused = False
        if self not in _STARTED:
            _STARTED.append(self)
        problem = wait_until_listening(self.proc, self.host, self.port, timeout)
        if problem is not None:
            self.kill()
            raise MemcachedStartError(f"memcached {problem}: {self.log()[-2000:]}")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signum)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nobody answers.

        Returns once every thread is stopped: a signal is delivered
        asynchronously, and a server still answering after `pause()` returned
        would make timing tests flaky.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True
        self._wait_for_state(stopped=True)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        self._signal(signal.SIGCONT)
        self._paused = False
        self._wait_for_state(stopped=False)

    def _thread_states(self) -> list[str] | None:
        """One-letter states of the process's threads (Linux /proc), or None."""
        assert self.proc is not None
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
            states = []
            for task in tasks:
                stat = Path(f"/proc/{self.proc.pid}/task/{task}/stat").read_text()
                states.append(stat.rsplit(")", 1)[1].split()[0])
            return states
        except OSError:
            return None

    def _wait_for_state(self, *, stopped: bool, timeout: float = 2.0) -> None:
        if not self.running:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self._thread_states()
            if states is None:  # no /proc: give the signal a moment
                time.sleep(0.05)
                return
            if all((state in "tT") == stopped for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"memcached pid {self.pid} did not {'stop' if stopped else 'continue'}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 5 s)."""
        if self.proc is None:
            return
        if self.running and self._paused:
            self.resume()
        terminate(self.proc)

    def kill(self) -> None:
        """SIGKILL and wait: the server vanishes without closing anything politely."""
        if self.proc is None:
            return
        if self.running:
            self.proc.kill()
        self.proc.wait()
        self._paused = False

    def restart(self) -> MemcachedProcess:
        """Stop if running, then start again on the same port (empty cache)."""
        self.stop()
        return self.start()

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def commands(self, verb: str | None = None) -> list[str]:
        """Request lines the server logged (needs `verbose=True`), optionally of one verb."""
        lines = []
        for line in self.log().splitlines():
            # -vv logs each request line as "<fd command args...".
            if not line.startswith("<"):
                continue
            _, _, command = line.partition(" ")
            if verb is None or command.split(" ", 1)[0] == verb:
                lines.append(command)
        return lines

    def cleanup(self) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __repr__(self) -> str:
        return f"MemcachedProcess(port={self.port}, pid={self.pid}, running={self.running})"


def _start_or_skip(**options: object) -> MemcachedProcess:
    if not (os.path.isfile(MEMCACHED) and os.access(MEMCACHED, os.X_OK)):
        _unavailable(f"memcached binary not found ({MEMCACHED}); install memcached or set MEMCACHED_BIN")
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between probing and binding
        process = MemcachedProcess(**options)  # type: ignore[arg-type]
        try:
            return process.start()
        except MemcachedStartError as exc:
            process.cleanup()
            last = exc
    _unavailable(f"memcached could not be started: {last}")


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedProcess]:
    # Shared by the whole suite: with 16 MiB, the pages small items take leave the
    # 1 MiB slab class one page, and a test storing two large values loses the first.
    process = _start_or_skip(memory_mb=128)
    yield process
    process.cleanup()


@pytest.fixture(scope="session")
def memcached_url(memcached_server: MemcachedProcess) -> str:
    return memcached_server.url


@pytest.fixture
def memcached_servers() -> Iterator[Callable[..., list[MemcachedProcess]]]:
    started: list[MemcachedProcess] = []

    def start(n: int = 1, **options: object) -> list[MemcachedProcess]:
        processes = []
        for _ in range(n):
            process = _start_or_skip(**options)
            started.append(process)
            processes.append(process)
        return processes

    yield start
    for process in started:
        process.cleanup()


@pytest.fixture(scope="session")
def memcached_tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        _unavailable("the openssl command is needed to make a throwaway TLS certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    result = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        _unavailable(f"openssl could not make a certificate: {result.stderr.decode(errors='replace')[-500:]}")
    return str(cert), str(key)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill whatever memcached a test left running."""
    for process in _STARTED:
        process.cleanup()
    _STARTED.clear()
