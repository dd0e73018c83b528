"""Async batches are split so that each reply can arrive within the read timeout.

Concurrent `aget`s of one server are coalesced into multi-key gets, and
`aget_many` sends one per server. With large values one such reply can be far
more than can arrive within `timeout`; it is cut into chunks sized by what a
key has cost lately, each with its own deadline, and a chunk that fails fails
only its own keys.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess
from protocol_fixtures import protocol  # noqa: F401 - the fixture, parametrised over both protocols

from memo._backend import PartialFailure
from memo._errors import BackendTimeout
from memo._memcached import MemcachedBackend
from memo._memcached._async import FIRST_CHUNK, MAX_BATCH_KEYS, READ_RATE, chunk_size

Servers = Any

pytestmark = [pytest.mark.memcached, pytest.mark.usefixtures("protocol")]

VALUE_SIZE = 900_000


def test_chunk_size_fits_the_timeout() -> None:
    assert chunk_size(-1.0, 0.1) == FIRST_CHUNK  # nothing read yet: a small first chunk learns the size
    assert chunk_size(0.0, 0.1) == MAX_BATCH_KEYS  # misses cost nothing
    assert chunk_size(10.0, 0.1) == MAX_BATCH_KEYS
    assert chunk_size(VALUE_SIZE, 0.1) == int(0.1 * READ_RATE / VALUE_SIZE) == 2
    assert chunk_size(VALUE_SIZE, 0.25) == 5
    assert chunk_size(50_000_000, 0.1) == 1


def _store_big(process: MemcachedProcess, n: int) -> dict[str, bytes]:
    values = {f"big:{i}": os.urandom(16) * (VALUE_SIZE // 16) for i in range(n)}
    writer = MemcachedBackend([process.address], timeout=5.0)
    try:
        assert writer.set_many([(k, v, None) for k, v in values.items()]) == []
    finally:
        writer.close()
    return values


async def test_160_concurrent_reads_of_large_values_all_hit(memcached_servers: Servers) -> None:
    (process,) = memcached_servers(1, memory_mb=256)
    values = _store_big(process, 160)
    backend = MemcachedBackend([process.address], timeout=0.1)
    try:
        got = await asyncio.gather(*(backend.aget(k) for k in values), return_exceptions=True)
        failed = [k for k, v in zip(values, got, strict=True) if isinstance(v, BaseException)]
        assert failed == []
        assert got == list(values.values())
        # An explicit batch of the same keys, too.
        assert await backend.aget_many(list(values)) == values
    finally:
        await backend.aclose()
        backend.close()


async def test_a_slow_chunk_fails_only_its_own_keys(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    (process,) = memcached_servers(1, memory_mb=64)
    values = _store_big(process, 12)
    keys = list(values)
    backend = MemcachedBackend([process.address], timeout=0.25)
    real_request = MemcachedBackend._request
    asked: list[list[bytes]] = []

    async def second_chunk_times_out(self: MemcachedBackend, server: Any, build: Any, *args: Any) -> Any:
        if build.__name__ == "get_many":
            asked.append(list(args[0]))
            if len(asked) == 2:
                raise BackendTimeout("the second chunk did not answer")
        return await real_request(self, server, build, *args)

    monkeypatch.setattr(MemcachedBackend, "_request", second_chunk_times_out)
    try:
        with pytest.raises(PartialFailure) as caught:
            await backend.aget_many(keys)
        lost = {kb.decode() for kb in asked[1]}
        assert [len(chunk) for chunk in asked] == [FIRST_CHUNK, 5, 3]  # 4 to learn, then 5 per 0.25 s
        assert caught.value.result == {k: v for k, v in values.items() if k not in lost}
        asked.clear()
        # Coalesced gets: the callers of the slow chunk get its error, the others their values.
        got = await asyncio.gather(*(backend.aget(k) for k in keys), return_exceptions=True)
        lost = {kb.decode() for kb in asked[1]}
        assert len(lost) == 5
        for key, outcome in zip(keys, got, strict=True):
            if key in lost:
                assert isinstance(outcome, BackendTimeout)
            else:
                assert outcome == values[key]
    finally:
        await backend.aclose()
        backend.close()
