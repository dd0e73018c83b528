"""ElastiCache auto-discovery: the reply parser, and asking a stand-in configuration endpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from cluster_fixtures import ConfigEndpoint
from memcached_fixtures import MemcachedProcess
from ports import free_port

from memo._memcached._discovery import (
    ClusterConfig,
    ClusterDiscovery,
    DiscoveryError,
    Node,
    fetch_config,
    parse_config,
)

Servers = Callable[..., list[MemcachedProcess]]
Endpoints = Callable[..., ConfigEndpoint]

AWS_REPLY = (
    b"CONFIG cluster 0 147\r\n"
    b"12\n"
    b"myCluster.pc4ldq.0001.use1.cache.amazonaws.com|10.82.235.120|11211 "
    b"myCluster.pc4ldq.0002.use1.cache.amazonaws.com|10.80.249.27|11211\n"
    b"\r\nEND\r\n"
)


def test_parses_the_aws_reply() -> None:
    config = parse_config(AWS_REPLY)
    assert config == ClusterConfig(
        12,
        (
            Node("myCluster.pc4ldq.0001.use1.cache.amazonaws.com", "10.82.235.120", 11211),
            Node("myCluster.pc4ldq.0002.use1.cache.amazonaws.com", "10.80.249.27", 11211),
        ),
    )
    node = config.nodes[0]
    assert node.id == "myCluster.pc4ldq.0001.use1.cache.amazonaws.com:11211"
    assert node.address == ("10.82.235.120", 11211)
    assert Node("host.example", "", 11211).address == ("host.example", 11211)


def test_the_announced_length_is_not_trusted() -> None:
    # Endpoints have announced lengths that do not match the body; only END ends it.
    for length in (b"0", b"9", b"100000"):
        assert parse_config(AWS_REPLY.replace(b" 147\r\n", b" " + length + b"\r\n")).version == 12


def test_parses_the_legacy_reply() -> None:
    legacy = AWS_REPLY.replace(b"CONFIG cluster", b"VALUE AmazonElastiCache:cluster")
    assert parse_config(legacy) == parse_config(AWS_REPLY)


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"END\r\n",
        b"ERROR\r\n",
        b"VALUE other 0 5\r\nabcde\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n12\n\r\nEND\r\n",  # no node line
        b"CONFIG cluster 0 5\r\nxx\nh|1.2.3.4|11211\n\r\nEND\r\n",  # version not a number
        b"CONFIG cluster 0 5\r\n1\nh|1.2.3.4\n\r\nEND\r\n",  # two fields
        b"CONFIG cluster 0 5\r\n1\nh|1.2.3.4|port\n\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n1\nh|1.2.3.4|0\n\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n1\n||11211\n\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n1\nh|1.2.3.4|1 h|1.2.3.4|1\n\r\nEND\r\n",  # a node twice
        b"CONFIG cluster 0 5\r\n1\nh|1.2.3.4|1\nextra\n\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n1\nh|1.2.3.4|1\n",  # no END
        # a host name no lookup can take: refused here, never a UnicodeError in a call
        b"CONFIG cluster 0 5\r\n1\n" + b"a" * 64 + b".example|1.2.3.4|11211\n\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n1\na..b|1.2.3.4|11211\n\r\nEND\r\n",
        b"CONFIG cluster 0 5\r\n1\nh|not-an-ip..|11211\n\r\nEND\r\n",
    ],
)
def test_malformed_replies_are_refused(reply: bytes) -> None:
    with pytest.raises(DiscoveryError):
        parse_config(reply)


@pytest.mark.memcached
@pytest.mark.parametrize("legacy", [False, True], ids=["config-get-cluster", "legacy-get"])
def test_fetch_from_the_stand_in(
    memcached_servers: Servers, config_endpoint: Endpoints, legacy: bool
) -> None:
    processes = memcached_servers(2)
    endpoint = config_endpoint(processes, legacy=legacy)
    config = fetch_config("127.0.0.1", endpoint.port)
    assert config.version == 1
    assert [node.address for node in config.nodes] == [(p.host, p.port) for p in processes]
    endpoint.set_nodes(processes[:1])
    assert fetch_config("127.0.0.1", endpoint.port).version == 2


@pytest.mark.memcached
def test_a_plain_memcached_is_not_an_endpoint(memcached_server: MemcachedProcess) -> None:
    with pytest.raises(DiscoveryError, match="not an ElastiCache configuration endpoint"):
        fetch_config(memcached_server.host, memcached_server.port)


def test_an_unreachable_endpoint_is_a_discovery_error() -> None:

    with pytest.raises(DiscoveryError, match="cannot ask"):
        fetch_config("127.0.0.1", free_port(), connect_timeout=0.2, timeout=0.2)


@pytest.mark.memcached
def test_refresh_keeps_the_last_list_counts_and_logs(
    memcached_servers: Servers, config_endpoint: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    processes = memcached_servers(2)
    endpoint = config_endpoint(processes)
    seen: list[ClusterConfig] = []
    discovery = ClusterDiscovery("127.0.0.1", endpoint.port, seen.append, interval=3600)
    assert discovery.refresh() is True
    assert discovery.refresh() is False  # same list: no change reported
    endpoint.answer_garbage(b"7\nnot-a-node\n")
    with caplog.at_level(logging.WARNING, logger="memo"):
        assert discovery.refresh() is False
        assert discovery.refresh() is False
    assert len(seen) == 1 and discovery.config == seen[0]
    stats = discovery.stats()
    assert stats["failures"] == 2 and "host|ip|port" in stats["last_error"]
    assert stats["nodes"] == [f"localhost:{p.port}" for p in processes]
    # Logged once, not once per failure.
    assert len([r for r in caplog.records if "auto-discovery" in r.getMessage()]) == 1
    endpoint.set_nodes(processes[1:])
    assert discovery.refresh() is True
    assert [n.port for n in seen[-1].nodes] == [processes[1].port]
    assert discovery.stats()["last_error"] is None


@pytest.mark.memcached
def test_the_thread_asks_every_interval_and_ends_with_its_owner(
    memcached_servers: Servers, config_endpoint: Endpoints
) -> None:
    endpoint = config_endpoint(memcached_servers(1))
    changed = threading.Event()
    discovery = ClusterDiscovery("127.0.0.1", endpoint.port, lambda config: changed.set(), interval=0.05)
    discovery.ensure_running()
    assert discovery.first_attempt.wait(5)
    thread = discovery._thread
    assert thread is not None and thread.daemon
    asked = endpoint.asked
    changed.clear()
    endpoint.set_nodes(memcached_servers(1))
    assert changed.wait(5)
    assert endpoint.asked > asked
    del discovery  # only the thread's weak reference is left: it ends
    thread.join(5)
    assert not thread.is_alive()


@pytest.mark.memcached
def test_a_replaced_node_keeps_its_name_and_moves_to_its_new_address(config_endpoint: Endpoints) -> None:
    # ElastiCache replaces a failed node under the same host name with a new IP address.
    # The stand-in lists "localhost|<ip>|<port>": the same name and port, another address.
    import asyncio

    from pymemcache.client.base import Client

    import memo

    old = MemcachedProcess().start()
    new = MemcachedProcess(old.port)
    new.host = "127.0.0.2"
    new.start()
    try:
        endpoint = config_endpoint([old])
        cache = memo.Cache(endpoint.url, discovery_interval=3600, prefix="moved:")
        backend = cache.backend
        discovery = backend._discovery  # type: ignore[attr-defined]

        def items(process: MemcachedProcess) -> int:
            client = Client((process.host, process.port), timeout=2)
            try:
                return int(client.stats()[b"curr_items"])
            finally:
                client.close()

        async def scenario() -> None:
            assert cache.set("sync", 1) is True and await cache.aset("async", 1) is True
            before = items(old)
            assert before >= 2 and items(new) == 0
            endpoint.set_nodes([new])
            assert discovery.refresh() is True
            await asyncio.sleep(0)  # the loop's pool of the old address is dropped
            assert backend.servers == (f"localhost:{old.port}",)  # same name: same keys
            assert cache.set("sync", 2) is True and await cache.aset("async", 2) is True
            assert cache.get("sync") == 2 and await cache.aget("async") == 2
            assert items(old) == before  # nothing more went to the replaced address
            assert items(new) >= 2

        asyncio.run(scenario())
        cache.close()
    finally:
        old.cleanup()
        new.cleanup()
