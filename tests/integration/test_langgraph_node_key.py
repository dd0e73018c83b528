"""`memo.langgraph.node_key` against LangGraph's default key function, in real graphs.

Each point of the node-key problem runs twice: with LangGraph's `default_cache_key`
(showing the fault, so the test would notice LangGraph fixing it) and with
`node_key` (showing it right). Graphs cache in a `MemcachedCache` on real
memcached; the set-ordering case runs the graph in separate processes with
different `PYTHONHASHSEED`s, sharing one server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import pydantic
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

import memo
from memo.langgraph import MemcachedCache, node_key

pytestmark = pytest.mark.memcached

try:
    from langgraph._internal._cache import default_cache_key
except ImportError:  # pragma: no cover - LangGraph moved it; CachePolicy's default is the same function
    default_cache_key = CachePolicy().key_func

KEY_FUNCS = [pytest.param(default_cache_key, id="langgraph-default"), pytest.param(node_key, id="node_key")]


@pytest.fixture
def graph_cache(memcached_url: str) -> Iterator[MemcachedCache[Any]]:
    with MemcachedCache.from_url(memcached_url, prefix=f"nk{uuid.uuid4().hex[:10]}:") as made:
        yield made


class Search(TypedDict):
    query: str
    filters: dict[str, Any]
    hits: list[str]


def build_search(calls: Counter[str], key_func: Callable[..., Any], cache: MemcachedCache[Any]) -> Any:
    def search(state: Search) -> dict[str, Any]:
        calls["search"] += 1
        return {"hits": [f"{state['query']} {sorted(state['filters'])}"]}

    builder = StateGraph(Search)
    builder.add_node("search", search, cache_policy=CachePolicy(key_func=key_func, ttl=60))
    builder.add_edge(START, "search")
    builder.add_edge("search", END)
    return builder.compile(cache=cache)


# -- 1. dict key order ------------------------------------------------------------------


def test_dict_order_alone_changes_langgraphs_key_not_node_keys() -> None:
    assert default_cache_key({"a": 1, "b": 2}) != default_cache_key({"b": 2, "a": 1})
    assert node_key({"a": 1, "b": 2}) == node_key({"b": 2, "a": 1})
    nested_one = {"filters": {"lang": "en", "year": 2024}, "query": "q"}
    nested_two = {"query": "q", "filters": {"year": 2024, "lang": "en"}}
    assert node_key(nested_one) == node_key(nested_two)


@pytest.mark.parametrize("key_func", KEY_FUNCS)
def test_dict_order_in_a_real_graph(key_func: Callable[..., Any], graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()
    graph = build_search(calls, key_func, graph_cache)
    first = graph.invoke({"query": "llamas", "filters": {"lang": "en", "year": 2024}, "hits": []})
    second = graph.invoke({"query": "llamas", "filters": {"year": 2024, "lang": "en"}, "hits": []})
    assert first == second
    # LangGraph's default misses on the reordered dict; node_key serves the entry.
    assert calls["search"] == (2 if key_func is default_cache_key else 1)


# -- 2. sets across processes with different PYTHONHASHSEED --------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys
    from typing import Any, TypedDict
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import CachePolicy
    from langgraph._internal._cache import default_cache_key
    from memo.langgraph import MemcachedCache, node_key

    url, prefix, which = sys.argv[1:4]
    key_func = node_key if which == "node_key" else default_cache_key
    ran = []

    class State(TypedDict):
        tags: frozenset[str]
        out: str

    def label(state: State) -> dict[str, Any]:
        ran.append(1)
        return {"out": ",".join(sorted(state["tags"]))}

    builder = StateGraph(State)
    builder.add_node("label", label, cache_policy=CachePolicy(key_func=key_func))
    builder.add_edge(START, "label")
    builder.add_edge("label", END)
    tags = frozenset({"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"})
    with MemcachedCache.from_url(url, prefix=prefix) as cache:
        result = builder.compile(cache=cache).invoke({"tags": tags, "out": ""})
    state = {"tags": tags}
    print(json.dumps({"ran": len(ran), "out": result["out"], "key": key_func(state).hex()}))
    """
)


def run_worker(url: str, prefix: str, which: str, seed: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    done = subprocess.run(
        [sys.executable, "-c", WORKER, url, prefix, which],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("which", ["langgraph-default", "node_key"])
def test_sets_key_alike_in_processes_with_other_hash_seeds(which: str, memcached_url: str) -> None:
    prefix = f"seed{uuid.uuid4().hex[:10]}:"
    runs = [run_worker(memcached_url, prefix, which, seed) for seed in (1, 2, 3)]
    assert {run["out"] for run in runs} == {"alpha,beta,delta,epsilon,eta,gamma,theta,zeta"}
    if which == "node_key":
        assert len({run["key"] for run in runs}) == 1
        assert [run["ran"] for run in runs] == [1, 0, 0]  # the later processes are served
    else:
        # Three processes, three iteration orders, three keys: each process misses.
        assert len({run["key"] for run in runs}) == 3
        assert [run["ran"] for run in runs] == [1, 1, 1]


# -- 3. @task keyword arguments: list and tuple, mixed-type dict keys ----------------------


@pytest.mark.parametrize("key_func", KEY_FUNCS)
def test_task_kwargs_list_and_tuple(key_func: Callable[..., Any], graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()

    @task(cache_policy=CachePolicy(key_func=key_func))
    def describe(*, x: Any) -> str:
        calls["describe"] += 1
        return type(x).__name__

    @entrypoint(cache=graph_cache)
    def run(kind: str) -> str:
        return describe(x=[1, 2] if kind == "list" else (1, 2)).result()  # type: ignore[no-any-return]

    assert run.invoke("list") == "list"
    if key_func is default_cache_key:
        assert run.invoke("tuple") == "list"  # the tuple call was served the list's result
        assert calls["describe"] == 1
    else:
        assert run.invoke("tuple") == "tuple"
        assert [run.invoke("list"), run.invoke("tuple")] == ["list", "tuple"]  # both cached
        assert calls["describe"] == 2


@pytest.mark.parametrize("key_func", KEY_FUNCS)
def test_task_kwargs_with_mixed_type_dict_keys(
    key_func: Callable[..., Any], graph_cache: MemcachedCache[Any]
) -> None:
    calls: Counter[str] = Counter()

    @task(cache_policy=CachePolicy(key_func=key_func))
    def count(*, table: dict[Any, Any]) -> int:
        calls["count"] += 1
        return len(table)

    @entrypoint(cache=graph_cache)
    def run(_: int) -> int:
        return count(table={1: "a", "b": 2}).result()  # type: ignore[no-any-return]

    if key_func is default_cache_key:
        with pytest.raises(TypeError, match="not supported between instances"):
            run.invoke(0)
        assert calls["count"] == 0
    else:
        assert run.invoke(0) == run.invoke(0) == 2
        assert calls["count"] == 1
    assert node_key(table={1: "a", "b": 2}) == node_key(table={"b": 2, 1: "a"})


# -- what node_key keys, and what it refuses -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Profile(pydantic.BaseModel):
    name: str
    tags: set[str]


def test_node_key_is_type_exact() -> None:
    distinct = [
        1,
        1.0,
        True,
        "1",
        b"1",
        [1],
        (1,),
        {1},
        frozenset({1}),
        {"1": 1},
        {1: 1},
        None,
        Point(1, 2),
        (1, 2),
        dt.date(2024, 1, 2),
        "2024-01-02",
    ]
    keys = [node_key(value) for value in distinct]
    assert len(set(keys)) == len(distinct)
    assert node_key(1, 2) != node_key((1, 2)) != node_key(x=1, y=2)
    assert node_key(a=1, b=2) == node_key(b=2, a=1)  # keyword order never matters in a call
    assert node_key(Profile(name="a", tags={"x", "y"})) == node_key(Profile(name="a", tags={"y", "x"}))


class Opaque:
    pass


def test_node_key_refuses_what_it_cannot_key_and_names_where() -> None:
    with pytest.raises(memo.UnkeyableArgumentError, match=r"the node input\['docs'\]\[1\]") as caught:
        node_key({"docs": ["ok", Opaque()], "n": 1})
    message = str(caught.value)
    assert "Opaque" in message and "__cache_key__" in message and "key_func" in message
    with pytest.raises(memo.UnkeyableArgumentError, match="keyword argument 'hook'"):
        node_key(1, hook=lambda: 0)
    with pytest.raises(memo.UnkeyableArgumentError, match=r"argument 1\.y"):
        node_key(1, Point(1, Opaque()))  # type: ignore[arg-type]
    with pytest.raises(memo.UnkeyableArgumentError, match="a key of keyword argument 'table'"):
        node_key(table={Opaque(): 1})


def test_a_graph_run_fails_with_the_error_rather_than_cache_under_a_wrong_key(
    graph_cache: MemcachedCache[Any],
) -> None:
    calls: Counter[str] = Counter()
    graph = build_search(calls, node_key, graph_cache)
    with pytest.raises(memo.UnkeyableArgumentError, match=r"\['filters'\]\['client'\]"):
        graph.invoke({"query": "q", "filters": {"client": Opaque()}, "hits": []})
    assert calls["search"] == 0


class Chat(TypedDict):
    messages: list[Any]
    reply: str


def test_message_state_is_keyed_by_value(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()

    def answer(state: Chat) -> dict[str, Any]:
        calls["answer"] += 1
        return {"reply": f"{len(state['messages'])} messages"}

    builder = StateGraph(Chat)
    builder.add_node("answer", answer, cache_policy=CachePolicy(key_func=node_key))
    builder.add_edge(START, "answer")
    graph = builder.compile(cache=graph_cache)

    def ask() -> dict[str, Any]:  # new message objects every time, equal by value
        return {"messages": [HumanMessage("hi", id="m1"), AIMessage("hello", id="m2")], "reply": ""}

    first = list(graph.stream(ask(), stream_mode="updates"))
    second = list(graph.stream(ask(), stream_mode="updates"))
    assert second == [{"answer": {"reply": "2 messages"}, "__metadata__": {"cached": True}}]
    assert first[0]["answer"] == {"reply": "2 messages"}
    assert calls["answer"] == 1
