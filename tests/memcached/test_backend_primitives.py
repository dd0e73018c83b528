"""The primitives leases and generations are built on, on every backend, sync and async.

`gets`/`cas`, `touch`, `lease` (add + gets in one round trip) and the control-record
pair `get_all`/`set_all` must mean the same on memory:// as on memcached, so the
engine above them runs the same code over both.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import memo
from memo._backend import backend_from_url
from memo.testing import BackendOps as Ops


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["classic", "meta"])
def ops(backend_url: str, flavour: str, request: pytest.FixtureRequest) -> Any:
    # memory:// has no protocol: it runs twice, the same.
    options = {"protocol": request.param} if backend_url.startswith("memcached") else {}
    made = Ops(backend_from_url(backend_url, options), flavour)
    yield made
    made.close()


def _key() -> str:
    return f"prim:{uuid.uuid4().hex}"


def test_gets_returns_value_and_a_unique_that_changes_on_write(ops: Any) -> None:
    key = _key()
    assert ops.gets(key) is None
    assert ops.set(key, b"one", None)
    value, first = ops.gets(key)
    assert value == b"one"
    assert ops.set(key, b"two", None)
    value, second = ops.gets(key)
    assert value == b"two" and second != first


def test_cas_stores_only_over_the_version_it_read(ops: Any) -> None:
    key = _key()
    ops.set(key, b"v1", None)
    _, unique = ops.gets(key)
    assert ops.cas(key, b"v2", None, unique)
    assert ops.get(key) == b"v2"
    # The version read before the last write is gone: refused, value unchanged.
    assert not ops.cas(key, b"v3", None, unique)
    assert ops.get(key) == b"v2"


def test_cas_after_delete_is_refused_and_stores_nothing(ops: Any) -> None:
    key = _key()
    ops.set(key, b"v1", None)
    _, unique = ops.gets(key)
    assert ops.delete(key)
    assert not ops.cas(key, b"late", None, unique)
    assert ops.get(key) is None


def test_cas_of_an_oversize_value_is_refused(ops: Any) -> None:
    key = _key()
    ops.set(key, b"v1", None)
    _, unique = ops.gets(key)
    assert not ops.cas(key, b"x" * (ops.backend.max_value_size + 1), None, unique)
    assert ops.get(key) == b"v1"


def test_touch_extends_a_live_key_and_reports_a_missing_one(ops: Any) -> None:
    key = _key()
    assert not ops.touch(key, 10)
    ops.set(key, b"v", 1)
    assert ops.touch(key, 100)
    assert ops.get(key) == b"v"


def test_lease_adds_a_marker_only_when_absent_and_reports_what_is_there(ops: Any) -> None:
    key = _key()
    added, found = ops.lease(key, b"marker-a", 10)
    assert added
    assert found is not None and found[0] == b"marker-a"
    # A second lease finds the first one's marker and adds nothing.
    added, again = ops.lease(key, b"marker-b", 10)
    assert not added
    assert again == found
    # The unique from the lease lets its holder replace the marker, once.
    assert ops.cas(key, b"value", None, found[1])
    assert not ops.cas(key, b"other", None, found[1])
    assert ops.get(key) == b"value"
    # Over a value, a lease adds nothing and returns the value.
    added, over_value = ops.lease(key, b"marker-c", 10)
    assert not added and over_value is not None and over_value[0] == b"value"


def test_connection_stays_in_step_after_every_primitive(ops: Any) -> None:
    """Interleave every reply shape on the pooled connections; each read stays right."""
    keys = [_key() for _ in range(20)]
    for i, key in enumerate(keys):
        ops.lease(key, b"m%d" % i, 10)
        _, unique = ops.gets(key)
        ops.cas(key, b"v%d" % i, None, unique)
        ops.touch(key, 50)
    for i, key in enumerate(keys):
        assert ops.get(key) == b"v%d" % i
    assert ops.get_many(keys) == {key: b"v%d" % i for i, key in enumerate(keys)}


def test_set_all_and_get_all_round_trip(ops: Any) -> None:
    key = _key()
    assert all(v is None for v in ops.get_all(key).values())
    assert ops.set_all(key, b"token", None) == 1  # the one server of the backend
    assert set(ops.get_all(key).values()) == {b"token"}


@pytest.mark.memcached
def test_control_records_reach_every_server_and_survive_one_down(
    memcached_servers: Any, flavour: str
) -> None:
    servers = memcached_servers(3)
    url = "memcached://" + ",".join(s.address for s in servers)
    ops = Ops(backend_from_url(url, {"timeout": 0.2, "connect_timeout": 0.2}), flavour)
    try:
        key = _key()
        assert ops.set_all(key, b"t1", None) == 3
        assert ops.get_all(key) == {s.address: b"t1" for s in servers}
        servers[1].stop()
        assert ops.get_all(key) == {servers[0].address: b"t1", servers[2].address: b"t1"}
        assert ops.set_all(key, b"t2", None) == 2
        for s in servers:
            s.stop()
        with pytest.raises(memo.BackendError):
            ops.get_all(key)
        with pytest.raises(memo.BackendError):
            ops.set_all(key, b"t3", None)
    finally:
        ops.close()


def test_memory_control_records_are_never_evicted() -> None:
    backend = backend_from_url("memory://", {"max_entries": 10})
    backend.set_all("gen", b"token", None)
    for i in range(100):
        backend.set(f"k{i}", b"v", None)
    assert backend.get_all("gen") == {"memory": b"token"}
    assert len(backend) == 10  # type: ignore[arg-type]


def test_append_all_creates_or_appends_and_never_drops_what_is_there(ops: Any) -> None:
    key = _key()
    assert ops.append_all(key, b"a", None) == 1
    assert set(ops.get_all(key).values()) in ({b"a"}, {b"aa"})  # pipelined add+append may double
    ops.set_all(key, b"x", None)
    assert ops.append_all(key, b"y", None) == 1
    assert set(ops.get_all(key).values()) == {b"xy"}


def test_get_all_many_reads_several_records_from_every_server(ops: Any) -> None:
    k1, k2, absent = _key(), _key(), _key()
    ops.set_all(k1, b"one", None)
    ops.set_all(k2, b"two", None)
    found = ops.get_all_many([k1, k2, absent])
    assert found and all(got == {k1: b"one", k2: b"two"} for got in found.values())


@pytest.mark.memcached
def test_append_all_and_get_all_many_across_servers_one_down(memcached_servers: Any, flavour: str) -> None:
    servers = memcached_servers(3)
    url = "memcached://" + ",".join(s.address for s in servers)
    ops = Ops(backend_from_url(url, {"timeout": 0.2, "connect_timeout": 0.2}), flavour)
    try:
        key = _key()
        with memo.Cache(servers[0].url) as one:
            one.backend.set(key, b"old", None)  # one server holds the record, the others not
        assert ops.append_all(key, b"new", None) == 3
        records = ops.get_all_many([key])
        assert records[servers[0].address] == {key: b"oldnew"}
        assert {records[s.address][key] for s in servers[1:]} <= {b"new", b"newnew"}
        servers[1].stop()
        assert set(ops.get_all_many([key])) == {servers[0].address, servers[2].address}
        assert ops.append_all(key, b"!", None) == 2
        for s in servers:
            s.stop()
        with pytest.raises(memo.BackendError):
            ops.get_all_many([key])
        with pytest.raises(memo.BackendError):
            ops.append_all(key, b"?", None)
    finally:
        ops.close()
