"""Ring routing: stable, balanced, minimal movement, and exactly the documented ring."""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memo._routing import POINTS, Router, key_hash, server_points


def plain_points(server: str) -> list[int]:
    """A server's ring points, derived as the module docstring says."""
    points = []
    for j in range(POINTS // 8):
        digest = hashlib.blake2b(f"{server}#{j}".encode(), person=b"memo-ring").digest()
        points += [int.from_bytes(digest[i : i + 8], "little") for i in range(0, 64, 8)]
    return points


def reference_index(servers: list[str], key: str) -> int:
    """The routing rule written out plainly: the first point at or after the key's hash."""
    h = int.from_bytes(hashlib.blake2b(key.encode()).digest()[:8], "little")
    best: tuple[int, str, int] | None = None
    lowest: tuple[int, str, int] | None = None
    for i, server in enumerate(servers):
        for point in plain_points(server):
            candidate = (point, server, i)
            if point >= h and (best is None or candidate < best):
                best = candidate
            if lowest is None or candidate < lowest:
                lowest = candidate
    chosen = best if best is not None else lowest
    assert chosen is not None
    return chosen[2]


def servers_named(n: int, pattern: str = "10.0.0.{i}:11211") -> list[str]:
    return [pattern.format(i=i, port=11211 + i) for i in range(n)]


KEYS = [f"memo:v1:pkg.mod.func:{i:032x}" for i in range(20_000)]
PINNED = ["a", "memo:v1:f:0", "memo:v1:f:1", "user:42", "memo:v1:mod.func:0123456789abcdef0123456789abcdef"]
PINNED_SERVERS = ["10.0.0.4:11211", "10.0.0.3:11211", "10.0.0.2:11211", "10.0.0.1:11211", "10.0.0.2:11211"]
PINNED_POINTS = [12019681484593585199, 771066503685628817]
PINNED_HASH = 1260069880423202611


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_ring_matches_the_plain_rule(n: int) -> None:
    servers = servers_named(n)
    router = Router(servers)
    for key in [*KEYS[:300], "a", "~", "x" * 250, "user:1", "user:2"]:
        assert router.index_of(key) == reference_index(servers, key), key


def test_routing_is_pinned() -> None:
    # Changing these moves every key of every deployment to another server.
    router = Router(["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211", "10.0.0.4:11211"])
    assert [router.server_of(k) for k in PINNED] == PINNED_SERVERS
    assert server_points("10.0.0.1:11211")[:2] == PINNED_POINTS
    assert key_hash(b"a") == PINNED_HASH


def test_same_in_another_process() -> None:
    servers = servers_named(5)
    keys = KEYS[:200]
    here = [Router(servers).index_of(k) for k in keys]
    code = (
        "import sys, json; from memo._routing import Router; "
        "servers, keys = json.loads(sys.stdin.read()); "
        "print(json.dumps([Router(servers).index_of(k) for k in keys]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([servers, keys]),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert json.loads(out.stdout) == here


def test_single_server_needs_no_hashing() -> None:
    router = Router(["only:11211"])
    assert {router.index_of(k) for k in KEYS[:100]} == {0}
    assert router.group_by_server(["a", "b", "a"]) == {0: ["a", "b", "a"]}
    assert router.group_by_server([]) == {}


def test_order_of_the_list_does_not_matter() -> None:
    servers = servers_named(6)
    forward, backward = Router(servers), Router(list(reversed(servers)))
    for key in KEYS[:2000]:
        assert forward.server_of(key) == backward.server_of(key)


@pytest.mark.parametrize("pattern", ["10.0.0.{i}:11211", "127.0.0.1:{port}", "cache-{i}.internal:11211"])
@pytest.mark.parametrize("n", [2, 3, 8])
def test_balance(n: int, pattern: str) -> None:
    index_of = Router(servers_named(n, pattern)).index_of
    counts = collections.Counter(index_of(k) for k in KEYS)
    mean = len(KEYS) / n
    assert len(counts) == n
    # 20,000 keys: a fair share deviates by a few percent; 10% would be a biased mix.
    assert max(abs(c - mean) for c in counts.values()) < 0.1 * mean, counts


@pytest.mark.parametrize("n", [2, 4, 8])
def test_removing_a_server_moves_only_its_keys(n: int) -> None:
    servers = servers_named(n)
    before = Router(servers)
    removed = servers[n // 2]
    after = Router([s for s in servers if s != removed])
    moved = 0
    for key in KEYS:
        was, now = before.server_of(key), after.server_of(key)
        if was != now:
            assert was == removed
            moved += 1
        else:
            assert was != removed
    assert abs(moved / len(KEYS) - 1 / n) < 0.25 / n


@pytest.mark.parametrize("n", [1, 3, 7])
def test_adding_a_server_moves_only_keys_to_it(n: int) -> None:
    servers = servers_named(n)
    before, after = Router(servers), Router([*servers, "10.0.1.99:11211"])
    moved = 0
    for key in KEYS:
        was, now = before.server_of(key), after.server_of(key)
        if was != now:
            assert now == "10.0.1.99:11211"
            moved += 1
    assert abs(moved / len(KEYS) - 1 / (n + 1)) < 0.25 / (n + 1)


@pytest.mark.parametrize("change", ["remove", "add"])
def test_one_node_change_in_64_moves_about_one_64th(change: str) -> None:
    """A 64-node cluster, simulated: one node leaves or joins, ~1/64 of keys move, all to/from it."""
    servers = servers_named(64, "cache-{i}.abc123.cfg.use1.cache.amazonaws.com:11211")
    if change == "remove":
        node = servers[17]
        before, after = Router(servers), Router([s for s in servers if s != node])
    else:
        node = "cache-64.abc123.cfg.use1.cache.amazonaws.com:11211"
        before, after = Router(servers), Router([*servers, node])
    moved = 0
    for key in KEYS:
        was, now = before.server_of(key), after.server_of(key)
        if was != now:
            assert node in (was, now)
            moved += 1
    share = 1 / 64 if change == "remove" else 1 / 65
    # 20,000 keys put ~310 on one node; sampling alone gives +-6 %, points +-5 %.
    assert abs(moved / len(KEYS) - share) < 0.3 * share, moved


def test_large_cluster_balance() -> None:
    """At 64 nodes no node takes more than ~1.3x its share (sampling noise included)."""
    index_of = Router(servers_named(64)).index_of
    counts = collections.Counter(index_of(k) for k in KEYS)
    mean = len(KEYS) / 64
    assert len(counts) == 64
    assert max(counts.values()) < 1.3 * mean and min(counts.values()) > 0.7 * mean, counts


def test_group_by_server_partitions_in_order() -> None:
    router = Router(servers_named(4))
    keys = KEYS[:500] + KEYS[:10]  # repeated keys are kept
    groups = router.group_by_server(keys)
    assert sum(len(g) for g in groups.values()) == len(keys)
    for index, group in groups.items():
        assert all(router.index_of(k) == index for k in group)
        positions = [i for i, k in enumerate(keys) if router.index_of(k) == index]
        assert group == [keys[i] for i in positions]


def test_bad_server_lists() -> None:
    with pytest.raises(ValueError):
        Router([])
    with pytest.raises(ValueError):
        Router(["a:1", "b:1", "a:1"])


def test_cost_per_key(capsys: pytest.CaptureFixture[str]) -> None:
    """Print (never assert) the cost per key; budgets are checked by the benchmarks."""
    keys = [k.encode() for k in KEYS[:5000]]
    lines = []
    for n in (1, 8, 64, 256):
        index = Router(servers_named(n)).index
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for key in keys:
                index(key)
            best = min(best, time.perf_counter() - start)
        lines.append(f"{n} servers: {best / len(keys) * 1e6:.2f} µs/key")
    with capsys.disabled():
        print("\nrouting cost: " + "; ".join(lines))
