"""The importable backend contract (memo.testing.BackendContract) on memo's own backends."""

from __future__ import annotations

import time
import types

import pytest
from doc_blocks import DOCS, blocks
from protocol_fixtures import protocol  # noqa: F401 - the fixture, parametrised over both protocols

from memo._backend import Backend, backend_from_url
from memo._clock import FakeClock
from memo._memory import MemoryBackend
from memo.testing import BackendContract


class TestMemoryBackend(BackendContract):
    """memory:// reads its clock in this process: the expiry tests move a fake one."""

    @pytest.fixture
    def make_backend(self, fake_clock: FakeClock) -> Backend:
        self.clock = fake_clock
        return MemoryBackend(max_value_size=4096)

    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)


@pytest.mark.memcached
@pytest.mark.usefixtures("protocol")
class TestMemcachedBackend(BackendContract):
    """A real server's clock: the expiry tests wait for it."""

    @pytest.fixture
    def make_backend(self, memcached_url: str) -> Backend:
        return backend_from_url(memcached_url, {})


def _documented_backend(clock: FakeClock) -> type[Backend]:
    """The example backend of docs/backends.md, as the page defines it, reading `clock`."""
    namespace: dict[str, object] = {"__name__": "docs_backends_example"}
    exec(blocks(DOCS / "backends.md")[0].code, namespace)
    assert namespace["time"] is time  # the sample reads time.monotonic(); it reads the clock here
    namespace["time"] = types.SimpleNamespace(monotonic=clock.monotonic)
    return namespace["DictBackend"]  # type: ignore[return-value]


class TestTheDocumentedExampleBackend(BackendContract):
    @pytest.fixture
    def make_backend(self, fake_clock: FakeClock) -> Backend:
        self.clock = fake_clock
        return _documented_backend(fake_clock)()

    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)


class Forgetful(MemoryBackend):
    """A broken backend: `add` overwrites. The contract must catch it."""

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self.set(key, value, ttl)


def test_the_contract_catches_a_broken_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from memo.testing import BackendContract
        from tests_helper import Forgetful

        class TestForgetful(BackendContract):
            @pytest.fixture
            def make_backend(self):
                return Forgetful()
        """,
        tests_helper="from test_backend_contract import Forgetful",
    )
    plugins = ("-p", "no:memo", "-p", "no:asyncio", "-p", "no:cacheprovider")
    result = pytester.runpytest_inprocess(*plugins, "-k", "test_add_stores")
    result.assert_outcomes(failed=2, deselected=len(_contract_tests()) * 2 - 2)  # sync and async


def _contract_tests() -> list[str]:
    return [name for name in dir(BackendContract) if name.startswith("test_")]
