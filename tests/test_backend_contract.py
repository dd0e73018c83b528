"""The importable backend contract (memo.testing.BackendContract) on memo's own backends."""

from __future__ import annotations

import pytest

from memo._backend import Backend, backend_from_url
from memo._memory import MemoryBackend
from memo.testing import BackendContract


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def make_backend(self) -> Backend:
        return MemoryBackend(max_value_size=4096)


@pytest.mark.memcached
class TestMemcachedBackend(BackendContract):
    @pytest.fixture
    def make_backend(self, memcached_url: str) -> Backend:
        return backend_from_url(memcached_url, {})


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
    result = pytester.runpytest_inprocess(*plugins, "-k", "add")
    result.assert_outcomes(failed=1, deselected=len(_contract_tests()) - 1)


def _contract_tests() -> list[str]:
    return [name for name in dir(BackendContract) if name.startswith("test_")]
