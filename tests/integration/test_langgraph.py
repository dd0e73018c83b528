"""memo in real LangGraph graphs: `MemcachedCache` under `compile(cache=...)`, and `@cached` nodes.

Every graph runs twice: the second run must be served from the cache, shown by
the nodes' call counters and by `stream_mode="updates"` marking each node's
update `{"__metadata__": {"cached": True}}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import operator
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import pydantic
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.types import CachePolicy, Command, Send, StreamWriter, interrupt
from ports import refused_url

import memo
from memo.langgraph import MemcachedCache, by_configurable, by_context
from memo.langgraph import node as langgraph_node

#: LangGraph hands the run's config to async nodes and tasks through contextvars; its
#: `get_config` documents Python 3.11+ for async code.
needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="LangGraph's async config propagation needs Python 3.11+"
)


@pytest.fixture(params=["memory", pytest.param("memcached", marks=pytest.mark.memcached)])
def cache(request: pytest.FixtureRequest) -> Iterator[memo.Cache]:
    url = "memory://" if request.param == "memory" else str(request.getfixturevalue("memcached_url"))
    made = memo.Cache(url, prefix=f"lg{uuid.uuid4().hex[:10]}:")
    yield made
    made.close()


@pytest.fixture
def graph_cache(cache: memo.Cache) -> MemcachedCache[Any]:
    return MemcachedCache(cache)


def cached_flags(updates: list[dict[str, Any]]) -> list[bool]:
    """For each node update of a `stream_mode="updates"` run: was it served from the cache?"""
    return [chunk.get("__metadata__", {}).get("cached", False) for chunk in updates]


# -- a StateGraph: sync and async nodes, a conditional edge, a Send fan-out ----------------


class Pipeline(TypedDict):
    topic: str
    parts: Annotated[list[str], operator.add]
    summary: str


def build_pipeline(calls: Counter[str], *, asynchronous: bool) -> StateGraph[Any, Any, Any, Any]:
    def plan(state: Pipeline) -> dict[str, Any]:
        calls["plan"] += 1
        return {"parts": [f"{state['topic']}: plan"]}

    def route(state: Pipeline) -> str:
        return "fan out" if state["topic"] != "nothing" else END

    def fan_out(state: Pipeline) -> list[Send]:
        return [Send("draft section", {"topic": state["topic"], "section": i}) for i in range(3)]

    def draft(arg: dict[str, Any]) -> dict[str, Any]:
        calls["draft section"] += 1
        return {"parts": [f"{arg['topic']} #{arg['section']}"]}

    def summarize(state: Pipeline) -> dict[str, Any]:
        calls["summarize"] += 1
        return {"summary": " | ".join(state["parts"])}

    async def aplan(state: Pipeline) -> dict[str, Any]:
        await asyncio.sleep(0)
        return plan(state)

    async def asummarize(state: Pipeline) -> dict[str, Any]:
        await asyncio.sleep(0)
        return summarize(state)

    policy = CachePolicy(ttl=120)
    builder = StateGraph(Pipeline)
    builder.add_node("plan", aplan if asynchronous else plan, cache_policy=policy)
    builder.add_node("fan out", lambda state: {}, cache_policy=policy)
    builder.add_node("draft section", draft, cache_policy=policy)
    builder.add_node("summarize", asummarize if asynchronous else summarize, cache_policy=policy)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", route, ["fan out", END])
    builder.add_conditional_edges("fan out", fan_out, ["draft section"])
    builder.add_edge("draft section", "summarize")
    builder.add_edge("summarize", END)
    return builder


EXPECTED_SUMMARY = "llamas: plan | llamas #0 | llamas #1 | llamas #2"


def test_state_graph_second_run_is_served_from_the_cache(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()
    graph = build_pipeline(calls, asynchronous=False).compile(cache=graph_cache)
    first = list(graph.stream({"topic": "llamas", "parts": []}, stream_mode="updates"))
    assert calls == {"plan": 1, "draft section": 3, "summarize": 1}
    assert not any(cached_flags(first))
    second = list(graph.stream({"topic": "llamas", "parts": []}, stream_mode="updates"))
    assert calls == {"plan": 1, "draft section": 3, "summarize": 1}
    assert len(second) == 6 and all(cached_flags(second))  # "fan out" included
    assert graph.invoke({"topic": "llamas", "parts": []})["summary"] == EXPECTED_SUMMARY
    graph.invoke({"topic": "alpacas", "parts": []})  # other input, other entries
    assert calls == {"plan": 2, "draft section": 6, "summarize": 2}
    assert graph_cache.cache.stats("langgraph")["errors"] == 0


async def test_async_state_graph_second_run_is_served_from_the_cache(
    graph_cache: MemcachedCache[Any],
) -> None:
    calls: Counter[str] = Counter()
    graph = build_pipeline(calls, asynchronous=True).compile(cache=graph_cache)
    first = [chunk async for chunk in graph.astream({"topic": "llamas", "parts": []}, stream_mode="updates")]
    assert not any(cached_flags(first))
    second = [chunk async for chunk in graph.astream({"topic": "llamas", "parts": []}, stream_mode="updates")]
    assert len(second) == 6 and all(cached_flags(second))
    assert (await graph.ainvoke({"topic": "llamas", "parts": []}))["summary"] == EXPECTED_SUMMARY
    assert calls == {"plan": 1, "draft section": 3, "summarize": 1}


def test_sync_and_async_runs_share_entries(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()
    graph = build_pipeline(calls, asynchronous=False).compile(cache=graph_cache)
    graph.invoke({"topic": "llamas", "parts": []})
    updates = asyncio.run(_collect(graph.astream({"topic": "llamas", "parts": []}, stream_mode="updates")))
    assert all(cached_flags(updates))
    assert calls == {"plan": 1, "draft section": 3, "summarize": 1}


async def _collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


# -- the functional API and subgraphs -----------------------------------------------------


@needs_311
def test_functional_api_tasks_are_cached(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()

    @task(cache_policy=CachePolicy(ttl=120))
    def outline(topic: str) -> list[str]:
        calls["outline"] += 1
        return [f"{topic} {i}" for i in range(2)]

    @task(cache_policy=CachePolicy())
    async def expand(point: str) -> str:
        calls["expand"] += 1
        return point.upper()

    @entrypoint(cache=graph_cache)
    async def write(topic: str) -> str:
        points = await outline(topic)
        return ", ".join(await asyncio.gather(*(expand(point) for point in points)))

    async def run() -> list[list[Any]]:
        return [await _collect(write.astream("llamas", stream_mode="updates")) for _ in range(2)]

    first, second = asyncio.run(run())
    assert first[-1] == second[-1] == {"write": "LLAMAS 0, LLAMAS 1"}
    assert calls == {"outline": 1, "expand": 2}
    # The first run computed each task once. Under load LangGraph sometimes also reports a
    # finished task again as a cache hit within that run (its write landed before LangGraph
    # looked again); the values and call counts are right either way.
    computed = [update for update, hit in zip(first[:-1], cached_flags(first[:-1]), strict=True) if not hit]
    assert sorted(map(str, computed)) == sorted(
        map(str, [{"outline": ["llamas 0", "llamas 1"]}, {"expand": "LLAMAS 0"}, {"expand": "LLAMAS 1"}])
    )
    assert all(cached_flags(second[:-1]))
    outline.clear_cache(graph_cache)
    asyncio.run(run())
    assert calls == {"outline": 2, "expand": 2}


class Numbers(TypedDict):
    x: int


def build_subgraph(calls: Counter[str], cache: MemcachedCache[Any] | None) -> Any:
    def inner(state: Numbers) -> dict[str, Any]:
        calls["inner"] += 1
        return {"x": state["x"] + 100}

    builder = StateGraph(Numbers)
    builder.add_node("inner", inner, cache_policy=CachePolicy())
    builder.add_edge(START, "inner")
    builder.add_edge("inner", END)
    return builder.compile(cache=cache)


def test_subgraph_nodes_are_cached_by_the_subgraphs_own_cache(graph_cache: MemcachedCache[Any]) -> None:
    """A subgraph uses the cache it was compiled with, not its parent's: give it one."""
    calls: Counter[str] = Counter()
    parent = StateGraph(Numbers)
    parent.add_node("sub", build_subgraph(calls, graph_cache))
    parent.add_edge(START, "sub")
    parent.add_edge("sub", END)
    graph = parent.compile(cache=graph_cache)
    assert graph.invoke({"x": 1}) == {"x": 101}
    second = list(graph.stream({"x": 1}, stream_mode="updates", subgraphs=True))
    assert calls == {"inner": 1}
    assert [cached_flags([update]) for namespace, update in second if namespace] == [[True]]


def test_a_subgraph_cached_as_one_node(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()
    parent = StateGraph(Numbers)
    parent.add_node("sub", build_subgraph(calls, None), cache_policy=CachePolicy())
    parent.add_edge(START, "sub")
    parent.add_edge("sub", END)
    graph = parent.compile(cache=graph_cache)
    graph.invoke({"x": 1})
    assert cached_flags(list(graph.stream({"x": 1}, stream_mode="updates"))) == [True]
    assert calls == {"inner": 1}


# -- clearing, expiry, isolation ------------------------------------------------------------


def test_clear_cache_reruns_only_the_named_nodes(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()
    graph = build_pipeline(calls, asynchronous=False).compile(cache=graph_cache)
    graph.invoke({"topic": "llamas", "parts": []})
    graph.clear_cache(nodes=["summarize"])
    updates = list(graph.stream({"topic": "llamas", "parts": []}, stream_mode="updates"))
    assert calls == {"plan": 1, "draft section": 3, "summarize": 2}
    assert [next(iter(u)) for u, hit in zip(updates, cached_flags(updates), strict=True) if not hit] == [
        "summarize"
    ]
    graph.clear_cache()  # every node
    graph.invoke({"topic": "llamas", "parts": []})
    assert calls == {"plan": 2, "draft section": 6, "summarize": 3}


async def test_aclear_cache(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()
    graph = build_pipeline(calls, asynchronous=True).compile(cache=graph_cache)
    await graph.ainvoke({"topic": "llamas", "parts": []})
    await graph.aclear_cache(nodes=["plan", "draft section"])
    await graph.ainvoke({"topic": "llamas", "parts": []})
    assert calls == {"plan": 2, "draft section": 6, "summarize": 1}


def test_ttl_expiry_reruns_the_node(
    elapse: Callable[[float], None], graph_cache: MemcachedCache[Any]
) -> None:
    calls: Counter[str] = Counter()

    def short(state: Numbers) -> dict[str, Any]:
        calls["short"] += 1
        return {"x": state["x"] + 1}

    def lasting(state: Numbers) -> dict[str, Any]:
        calls["lasting"] += 1
        return {"x": state["x"] * 2}

    builder = StateGraph(Numbers)
    builder.add_node("short", short, cache_policy=CachePolicy(ttl=1))
    builder.add_node("lasting", lasting, cache_policy=CachePolicy(ttl=None))
    builder.add_edge(START, "short")
    builder.add_edge("short", "lasting")
    graph = builder.compile(cache=graph_cache)
    assert graph.invoke({"x": 1}) == graph.invoke({"x": 1}) == {"x": 4}
    assert calls == {"short": 1, "lasting": 1}
    elapse(2.1)  # memcached counts expiry in whole seconds
    assert graph.invoke({"x": 1}) == {"x": 4}
    assert calls == {"short": 2, "lasting": 1}


def build_one_node(fn: Callable[..., Any], name: str = "step") -> StateGraph[Any, Any, Any, Any]:
    builder = StateGraph(Numbers)
    builder.add_node(name, fn, cache_policy=CachePolicy())
    builder.add_edge(START, name)
    builder.add_edge(name, END)
    return builder


def double(state: Numbers) -> dict[str, Any]:
    return {"x": state["x"] * 2}


def square(state: Numbers) -> dict[str, Any]:
    return {"x": state["x"] ** 2}


async def adouble(state: Numbers) -> dict[str, Any]:
    return {"x": state["x"] * 2}


async def asquare(state: Numbers) -> dict[str, Any]:
    return {"x": state["x"] ** 2}


async def test_graphs_sharing_a_cache(cache: memo.Cache) -> None:
    shared = MemcachedCache(cache)
    # Sync nodes: LangGraph's namespace holds the function's qualname, so same-named nodes stay apart.
    first, second = build_one_node(double).compile(cache=shared), build_one_node(square).compile(cache=shared)
    assert (first.invoke({"x": 3}), second.invoke({"x": 3})) == ({"x": 6}, {"x": 9})
    # The same function under the same node name is the same computation: shared, correctly.
    again = build_one_node(double).compile(cache=shared)
    assert cached_flags(list(again.stream({"x": 3}, stream_mode="updates"))) == [True]
    # Async nodes: LangGraph's namespace says "__dynamic__" instead of the qualname, so
    # same-named async nodes of two graphs meet in one cache (the documented limitation) ...
    afirst, asecond = (
        build_one_node(adouble).compile(cache=shared),
        build_one_node(asquare).compile(cache=shared),
    )
    assert (await afirst.ainvoke({"x": 3}), await asecond.ainvoke({"x": 3})) == ({"x": 6}, {"x": 6})
    # ... and a cache name per graph keeps them apart, on the same memo Cache.
    afirst = build_one_node(adouble).compile(cache=MemcachedCache(cache, name="doubling"))
    asecond = build_one_node(asquare).compile(cache=MemcachedCache(cache, name="squaring"))
    assert (await afirst.ainvoke({"x": 3}), await asecond.ainvoke({"x": 3})) == ({"x": 6}, {"x": 9})
    MemcachedCache(cache, name="squaring").clear()
    assert cached_flags(await _collect(afirst.astream({"x": 3}, stream_mode="updates"))) == [True]


# -- what must not be cached ------------------------------------------------------------------


def test_interrupted_and_failed_nodes_are_not_cached(graph_cache: MemcachedCache[Any]) -> None:
    calls: Counter[str] = Counter()

    def ask(state: Numbers) -> dict[str, Any]:
        calls["ask"] += 1
        answer = interrupt("how many?")
        return {"x": state["x"] + answer}

    def flaky(state: Numbers) -> dict[str, Any]:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("transient")
        return {"x": state["x"] * 10}

    builder = StateGraph(Numbers)
    builder.add_node("ask", ask, cache_policy=CachePolicy())
    builder.add_node("flaky", flaky, cache_policy=CachePolicy())
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "flaky")
    graph = builder.compile(cache=graph_cache, checkpointer=InMemorySaver())

    one: RunnableConfig = {"configurable": {"thread_id": "one"}}
    assert "__interrupt__" in graph.invoke({"x": 1}, one)
    assert "__interrupt__" in graph.invoke({"x": 1}, {"configurable": {"thread_id": "two"}})
    assert calls["ask"] == 2  # the interrupted run stored nothing
    with pytest.raises(RuntimeError, match="transient"):
        graph.invoke(Command(resume=5), one)  # "ask" completes (3rd call), "flaky" fails
    assert graph.invoke(Command(resume=5), one) == {"x": 60}  # the failure stored nothing
    assert calls == {"ask": 3, "flaky": 2}
    three: RunnableConfig = {"configurable": {"thread_id": "three"}}
    assert graph.invoke({"x": 1}, three) == {"x": 60}  # completed nodes are hits, even "ask"
    assert calls == {"ask": 3, "flaky": 2}


# -- the cache failing never fails the run ----------------------------------------------------


def test_graph_completes_when_memcached_is_refused() -> None:
    calls: Counter[str] = Counter()
    with MemcachedCache.from_url(refused_url(), connect_timeout=0.2, timeout=0.2) as graph_cache:
        graph = build_pipeline(calls, asynchronous=False).compile(cache=graph_cache)
        assert graph.invoke({"topic": "llamas", "parts": []})["summary"] == EXPECTED_SUMMARY
        updates = list(graph.stream({"topic": "llamas", "parts": []}, stream_mode="updates"))
        assert not any(cached_flags(updates))
        assert calls == {"plan": 2, "draft section": 6, "summarize": 2}
        assert graph_cache.cache.stats("langgraph")["errors"] > 0


@pytest.mark.memcached
async def test_graph_completes_when_memcached_stops(memcached_servers: Callable[..., list[Any]]) -> None:
    (server,) = memcached_servers(1)
    calls: Counter[str] = Counter()
    async with MemcachedCache.from_url(server.url, connect_timeout=0.2, timeout=0.5) as graph_cache:
        graph = build_pipeline(calls, asynchronous=True).compile(cache=graph_cache)
        await graph.ainvoke({"topic": "llamas", "parts": []})
        assert all(
            cached_flags(
                await _collect(graph.astream({"topic": "llamas", "parts": []}, stream_mode="updates"))
            )
        )
        server.kill()
        result = await graph.ainvoke({"topic": "llamas", "parts": []})
        assert result["summary"] == EXPECTED_SUMMARY
        assert calls == {"plan": 2, "draft section": 6, "summarize": 2}
        sync_graph = build_pipeline(calls, asynchronous=False).compile(cache=graph_cache)
        assert sync_graph.invoke({"topic": "llamas", "parts": []})["summary"] == EXPECTED_SUMMARY
        assert graph_cache.cache.stats("langgraph")["errors"] > 0


@pytest.mark.memcached
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_clear_cache_fails_open_when_memcached_is_down(
    memcached_servers: Callable[..., list[Any]], flavour: str
) -> None:
    (server,) = memcached_servers(1)
    calls: Counter[str] = Counter()
    events: list[memo.Event] = []
    with MemcachedCache.from_url(
        server.url, connect_timeout=0.2, timeout=0.2, on_event=events.append
    ) as graph_cache:
        graph = build_pipeline(calls, asynchronous=False).compile(cache=graph_cache)
        graph.invoke({"topic": "llamas", "parts": []})
        server.kill()
        if flavour == "sync":
            graph.clear_cache(nodes=["summarize"])  # raised BackendUnavailable before
            graph.clear_cache()
        else:
            asyncio.run(graph.aclear_cache(nodes=["summarize"]))
            asyncio.run(graph.aclear_cache())
        assert graph_cache.cache.stats("langgraph")["errors"] >= 2
        assert [e.source for e in events if e.kind == "error" and e.ns == "langgraph"][-2:] == [
            "langgraph"
        ] * 2
        assert graph.invoke({"topic": "llamas", "parts": []})["summary"] == EXPECTED_SUMMARY
        assert calls == {"plan": 2, "draft section": 6, "summarize": 2}


# -- @cached on node functions ------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    user_id: str


@needs_311
def test_cached_nodes_receive_injected_parameters_which_keys_ignore(cache: memo.Cache) -> None:
    seen: list[tuple[str, Any]] = []

    @cache.cached(ns="nodes")
    def sync_node(state: Numbers, config: RunnableConfig, writer: StreamWriter) -> dict[str, Any]:
        seen.append(("sync", config["configurable"]["thread_id"]))
        writer({"progress": "sync"})
        return {"x": state["x"] + 1}

    @cache.cached(ns="nodes")
    async def async_node(state: Numbers, runtime: Runtime[Context], store: BaseStore) -> dict[str, Any]:
        assert isinstance(runtime.context, Context) and store is runtime.store
        seen.append(("async", runtime.context.user_id))
        runtime.stream_writer({"progress": "async"})
        return {"x": state["x"] * 10}

    assert inspect.iscoroutinefunction(async_node) and not inspect.iscoroutinefunction(sync_node)
    builder = StateGraph(Numbers, context_schema=Context)
    builder.add_node("sync node", sync_node)
    builder.add_node("async node", async_node)
    builder.add_edge(START, "sync node")
    builder.add_edge("sync node", "async node")
    graph = builder.compile(store=InMemoryStore(), checkpointer=InMemorySaver())

    async def run(thread: str) -> list[Any]:
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        stream = graph.astream({"x": 1}, config, context=Context("ann"), stream_mode=["custom", "values"])
        return await _collect(stream)

    first = asyncio.run(run("t1"))
    assert ("custom", {"progress": "sync"}) in first and ("custom", {"progress": "async"}) in first
    assert first[-1] == ("values", {"x": 20})
    assert asyncio.run(run("t2"))[-1] == ("values", {"x": 20})  # another thread, config, writer: a hit
    assert seen == [("sync", "t1"), ("async", "ann")]
    with pytest.raises(TypeError, match="No synchronous function"):  # LangGraph still sees it as async
        graph.invoke({"x": 1}, {"configurable": {"thread_id": "t3"}}, context=Context("ann"))


def test_scope_by_configurable_separates_users(cache: memo.Cache) -> None:
    seen: list[str] = []

    @cache.cached(ns="answers", scope=by_configurable("user_id"))
    def answer(state: Numbers, config: RunnableConfig) -> dict[str, Any]:
        seen.append(config["configurable"]["user_id"])
        return {"x": state["x"] + len(seen)}

    graph = build_one_node(answer).compile()
    ann, bob = ({"configurable": {"user_id": user, "trace": uuid.uuid4().hex}} for user in ("ann", "bob"))
    assert graph.invoke({"x": 0}, ann) == {"x": 1}
    assert graph.invoke({"x": 0}, bob) == {"x": 2}  # not ann's answer
    assert graph.invoke({"x": 0}, {"configurable": {"user_id": "ann", "trace": "other"}}) == {"x": 1}
    assert seen == ["ann", "bob"]
    with pytest.raises(KeyError, match="user_id"):  # no user, no shared answer
        graph.invoke({"x": 0})


def test_scope_by_lambda_and_by_several_configurable_keys(cache: memo.Cache) -> None:
    seen: Counter[str] = Counter()

    @cache.cached(ns="lambda", scope=lambda config: config["configurable"]["user_id"])
    def by_lambda(state: Numbers, config: RunnableConfig) -> dict[str, Any]:
        seen["lambda"] += 1
        return {"x": state["x"]}

    @cache.cached(ns="pair", scope=by_configurable("tenant", "user_id", default=None))
    def by_pair(state: Numbers, config: RunnableConfig) -> dict[str, Any]:
        seen["pair"] += 1
        return {"x": state["x"]}

    for node in (by_lambda, by_pair):
        graph = build_one_node(node).compile()
        for user in ("ann", "bob", "ann"):
            graph.invoke({"x": 0}, {"configurable": {"user_id": user, "tenant": "t"}})
    build_one_node(by_pair).compile().invoke({"x": 0}, {"configurable": {"user_id": "ann"}})  # tenant None
    assert seen == {"lambda": 2, "pair": 3}


async def test_scope_by_context(cache: memo.Cache) -> None:
    seen: list[str] = []

    @cache.cached(ns="ctx", scope=by_context("user_id"))
    async def greet(state: Numbers, runtime: Runtime[Context]) -> dict[str, Any]:
        seen.append(runtime.context.user_id)
        return {"x": state["x"] + len(runtime.context.user_id)}

    builder = StateGraph(Numbers, context_schema=Context)
    builder.add_node("greet", greet)
    builder.add_edge(START, "greet")
    graph = builder.compile()
    for user in ("ann", "bobby", "ann"):
        await graph.ainvoke({"x": 0}, context=Context(user))
    assert seen == ["ann", "bobby"]
    assert by_context("user_id")(Runtime(context={"user_id": "ann"})) == "ann"
    with pytest.raises(KeyError, match=r"runtime\.context"):
        by_context("user_id")(Runtime(context=None))
    assert by_context("user_id", default="anon")(Runtime(context=None)) == "anon"


@needs_311
async def test_unannotated_injected_parameters_of_a_node(cache: memo.Cache) -> None:
    """`@node` under `@cached`: what LangGraph injects by name is left out, annotated or not."""
    seen: list[tuple[str, Any]] = []

    @cache.cached(ns="plans", scope=by_context("user_id"))
    @langgraph_node
    async def plan(state, *, runtime):  # type: ignore[no-untyped-def]
        seen.append(("plan", runtime.context.user_id))
        runtime.stream_writer({"planned": runtime.context.user_id})
        return {"x": state["x"] + len(runtime.context.user_id)}

    @cache.cached(ns="steps", scope=by_configurable("user_id"))
    @langgraph_node
    def step(state, config, writer, store):  # type: ignore[no-untyped-def]
        seen.append(("step", config["configurable"]["user_id"]))
        writer({"stepped": True})
        store.put(("seen",), "step", {"x": state["x"]})
        return {"x": state["x"] * 10}

    builder = StateGraph(Numbers, context_schema=Context)
    builder.add_node("plan", plan)
    builder.add_node("step", step)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "step")
    graph = builder.compile(store=InMemoryStore())

    async def run(user: str) -> list[Any]:
        config: RunnableConfig = {"configurable": {"user_id": user}}
        return await _collect(
            graph.astream({"x": 0}, config, context=Context(user), stream_mode=["custom", "values"])
        )

    first = await run("ann")
    assert first[-1] == ("values", {"x": 30}) and ("custom", {"planned": "ann"}) in first
    assert (await run("ann"))[-1] == ("values", {"x": 30})  # a hit: config, runtime, writer, store left out
    assert (await run("bobby"))[-1] == ("values", {"x": 50})
    assert seen == [("plan", "ann"), ("step", "ann"), ("plan", "bobby"), ("step", "bobby")]


@needs_311
async def test_unmarked_unannotated_injected_parameters_are_refused(cache: memo.Cache) -> None:
    """Nothing proves LangGraph calls an unmarked function: its `runtime` stays in the key and is refused."""

    @cache.cached(ns="plans")
    async def plan(state, *, runtime):  # type: ignore[no-untyped-def]
        return {"x": 1}

    builder = StateGraph(Numbers, context_schema=Context)
    builder.add_node("plan", plan)
    builder.add_edge(START, "plan")
    with pytest.raises(memo.UnkeyableArgumentError, match="'runtime'"):
        await builder.compile().ainvoke({"x": 0}, context=Context("ann"))


def test_a_marked_task_leaves_out_its_config(cache: memo.Cache) -> None:
    calls: Counter[str] = Counter()

    @task
    @cache.cached(ns="tasks", scope=by_configurable("user_id"))
    @langgraph_node
    def shout(text, *, config):  # type: ignore[no-untyped-def]
        calls[config["configurable"]["user_id"]] += 1
        return text.upper()

    @entrypoint()
    def loud(texts: list[str]) -> list[str]:
        return [shout(text).result() for text in texts]

    for user in ("ann", "ann", "bob"):
        assert loud.invoke(["a", "b"], {"configurable": {"user_id": user}}) == ["A", "B"]
    assert calls == {"ann": 2, "bob": 2}


def test_cached_task_and_send_target(cache: memo.Cache) -> None:
    calls: Counter[str] = Counter()

    @task
    @cache.cached(ns="tasks")
    def shout(text: str, config: RunnableConfig) -> str:
        calls["shout"] += 1
        return text.upper()

    @entrypoint()
    def loud(texts: list[str]) -> list[str]:
        return [future.result() for future in [shout(text) for text in texts]]

    assert loud.invoke(["a", "b", "a"]) == ["A", "B", "A"]
    assert loud.invoke(["b"]) == ["B"]
    assert calls["shout"] == 2

    class Fan(TypedDict):
        items: Annotated[list[Any], operator.add]

    @cache.cached(ns="send")
    def handle(payload: dict[str, Any]) -> dict[str, Any]:
        calls["handle"] += 1
        return {"items": [payload["a"] + payload["b"]]}

    builder = StateGraph(Fan)
    builder.add_node("start", lambda state: {})
    builder.add_node("handle", handle)
    builder.add_edge(START, "start")
    # One payload in two insertion orders: one key.
    builder.add_conditional_edges(
        "start", lambda s: [Send("handle", {"a": 1, "b": 2}), Send("handle", {"b": 2, "a": 1})]
    )
    assert build_and_run(builder) == {"items": [3, 3]}
    assert calls["handle"] == 1


def build_and_run(builder: StateGraph[Any, Any, Any, Any]) -> Any:
    return builder.compile().invoke({"items": []})


class ModelState(pydantic.BaseModel):
    a: int
    b: dict[str, int]


@dataclasses.dataclass
class DataState:
    a: int
    b: dict[str, int]


class DictState(TypedDict):
    a: int
    b: dict[str, int]


@pytest.mark.parametrize("schema", [DictState, DataState, ModelState], ids=lambda s: s.__name__)
def test_state_is_keyed_by_value(cache: memo.Cache, schema: type) -> None:
    calls: list[Any] = []

    @cache.cached(ns=f"state-{schema.__name__}")
    def total(state: Any) -> dict[str, Any]:
        calls.append(state)
        b = state["b"] if isinstance(state, dict) else state.b
        return {"a": sum(b.values())}

    builder = StateGraph(schema)
    builder.add_node("total", total)
    builder.add_edge(START, "total")
    graph = builder.compile()
    first = graph.invoke({"a": 0, "b": {"x": 1, "y": 2}})
    second = graph.invoke({"b": {"y": 2, "x": 1}, "a": 0})  # new objects, other insertion order
    assert first["a"] == second["a"] == 3
    assert len(calls) == 1
    graph.invoke({"a": 0, "b": {"x": 1, "y": 3}})
    assert len(calls) == 2


def test_previous_stays_in_the_key_of_a_cached_entrypoint(cache: memo.Cache) -> None:
    """`previous` is the entrypoint's last result: data the next result depends on."""

    @entrypoint(checkpointer=InMemorySaver())
    @cache.cached(ns="counter")
    def counter(step: int, *, previous: Any = None) -> int:
        return (previous or 0) + step

    config: RunnableConfig = {"configurable": {"thread_id": "counter"}}
    assert [counter.invoke(1, config) for _ in range(3)] == [1, 2, 3]


def test_cached_nodes_and_the_graph_cache_share_one_memo_cache(cache: memo.Cache) -> None:
    calls: Counter[str] = Counter()

    @cache.cached(ns="lookup")
    def lookup(x: int) -> int:
        calls["lookup"] += 1
        return x * 3

    def node(state: Numbers) -> dict[str, Any]:
        calls["node"] += 1
        return {"x": lookup(state["x"])}

    graph_cache = MemcachedCache(cache)
    graph = build_one_node(node).compile(cache=graph_cache)
    assert graph.invoke({"x": 2}) == graph.invoke({"x": 2}) == {"x": 6}
    graph_cache.clear()  # the graph's entries only
    assert graph.invoke({"x": 2}) == {"x": 6}
    assert calls == {"node": 2, "lookup": 1}
    assert set(cache.stats()) >= {"lookup", "langgraph", "total"}


def test_public_names_of_memo_langgraph() -> None:
    import memo.langgraph

    assert set(memo.langgraph.__all__) == {
        "MemcachedCache",
        "by_configurable",
        "by_context",
        "node",
        "node_key",
    }
    with pytest.raises(memo.ConfigurationError):
        by_configurable()
    with pytest.raises(memo.ConfigurationError):
        by_context()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_policy_ttl_holds_to_the_millisecond(graph_cache: MemcachedCache[Any], flavour: str) -> None:
    """memcached alone keeps ttl=1 anywhere from 0 to 1 s; the entry's own expiry makes it exact."""
    key = (("node",), "0" * 32)

    def get() -> dict[Any, Any]:
        if flavour == "sync":
            return graph_cache.get([key])
        return asyncio.run(graph_cache.aget([key]))

    if flavour == "sync":
        graph_cache.set({key: ({"v": 1}, 1)})
    else:
        asyncio.run(graph_cache.aset({key: ({"v": 1}, 1)}))
    stored_at = time.monotonic()
    assert get() == {key: {"v": 1}}
    time.sleep(max(0.0, stored_at + 1.05 - time.monotonic()))
    assert get() == {}  # expired at 1 s, though memcached keeps the item a second longer
    assert graph_cache.cache.stats(graph_cache.name)["decode_errors"] == 0


def test_the_package_modules_import_downwards_only() -> None:
    """memo.langgraph's modules form no import circle among themselves (each does one job)."""
    import ast
    from pathlib import Path

    import memo.langgraph

    folder = Path(memo.langgraph.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in folder.glob("_*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }

    def reaches(start: str, goal: str, seen: frozenset[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in graph.get(start, ())
        )

    assert len(graph) >= 8
    assert sorted(m for m in graph if reaches(m, m, frozenset({m}))) == []
