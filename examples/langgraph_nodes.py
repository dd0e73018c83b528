"""LangGraph nodes on memo, two ways, on one memo.Cache.

1. A node cache for the whole graph: `compile(cache=MemcachedCache(cache))` and a
   `CachePolicy` on the nodes worth caching, keyed by the exact value of each
   node's input with `key_func=node_key`.
2. `@cached` on a node function, scoped per user: LangGraph's own node key
   ignores config and context, so a node whose result depends on the user
   must say so; `scope=by_configurable("user_id")` puts the user in the key.

No LLM, no network: the "slow" steps sleep. Runs on the in-process memory://
backend by default; set MEMO_URL to run it on memcached, e.g.
MEMO_URL=memcached://127.0.0.1:11211 python examples/langgraph_nodes.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

import memo
from memo.langgraph import MemcachedCache, by_configurable, node_key

url = os.environ.get("MEMO_URL", "memory://")
cache = memo.Cache(url, prefix="langgraph-example:")
cache.clear()  # start this demo from empty entries (other keys on the server are untouched)
calls: Counter[str] = Counter()


class Ticket(TypedDict, total=False):
    text: str
    category: str
    profile: dict[str, Any]
    reply: str


# -- style 1: the graph's node cache ----------------------------------------------------


def classify(state: Ticket) -> Ticket:
    calls["classify"] += 1
    time.sleep(0.05)  # stands in for a model call
    return {"category": "billing" if "invoice" in state["text"] else "general"}


async def draft_reply(state: Ticket) -> Ticket:
    calls["draft reply"] += 1
    await asyncio.sleep(0.05)  # stands in for a model call
    return {"reply": f"[{state['category']}] About {state['text']!r}: we are on it."}


# -- style 2: @cached on a node, one entry per user --------------------------------------


@cache.cached(ns="profiles", ttl=300, ignore=("state",), scope=by_configurable("user_id"))
async def load_profile(state: Ticket, config: RunnableConfig) -> Ticket:
    # `config` is injected by LangGraph and left out of the key, and so is the state here:
    # the key is the user id alone, put in by scope=.
    calls["load profile"] += 1
    await asyncio.sleep(0.05)  # stands in for a database query
    user = config["configurable"]["user_id"]
    return {"profile": {"user": user, "plan": "pro" if user == "ann" else "free"}}


def route(state: Ticket) -> str:
    return "draft reply" if state["category"] == "billing" else END


builder = StateGraph(Ticket)
policy = CachePolicy(key_func=node_key, ttl=300)
builder.add_node("classify", classify, cache_policy=policy)
builder.add_node("draft reply", draft_reply, cache_policy=policy)
builder.add_node("load profile", load_profile)  # cached by @cached, per user
builder.add_edge(START, "classify")
builder.add_edge("classify", "load profile")
builder.add_conditional_edges("load profile", route, ["draft reply", END])
graph = builder.compile(cache=MemcachedCache(cache))


async def run(label: str, user: str, text: str) -> Ticket:
    config: RunnableConfig = {"configurable": {"user_id": user}}
    start = time.perf_counter()
    served: list[str] = []
    result: Ticket = {}
    chunk: Any
    async for mode, chunk in graph.astream({"text": text}, config, stream_mode=["updates", "values"]):
        if mode == "values":
            result = chunk
        elif chunk.get("__metadata__", {}).get("cached"):  # how LangGraph marks a cache hit
            served += [name for name in chunk if name != "__metadata__"]
    elapsed = (time.perf_counter() - start) * 1e3
    print(f"{label:<36} {elapsed:6.1f} ms   served by the graph cache: {', '.join(served) or '-'}")
    return result


async def main() -> None:
    backend = "memcached" if url.startswith("memcached") else "memory"
    print(f"memo {memo.__version__} + LangGraph on the {backend} backend ({url})\n")
    first = await run("ann: invoice question (cold)", "ann", "where is my invoice?")
    again = await run("ann: the same question (warm)", "ann", "where is my invoice?")
    bob = await run("bob: the same question", "bob", "where is my invoice?")
    await run("ann: another question", "ann", "how do I log in?")

    # The graph cache served classify (and ann's draft reply: bob's state holds another
    # profile, so his is his own); @cached served each user's profile once computed.
    assert again == first and bob["profile"]["user"] == "bob" and first["profile"]["user"] == "ann"
    assert calls == {"classify": 2, "draft reply": 2, "load profile": 2}, calls

    graph.clear_cache(nodes=["draft reply"])  # only that node's entries go
    await run("ann: after clear_cache(draft reply)", "ann", "where is my invoice?")
    assert calls == {"classify": 2, "draft reply": 3, "load profile": 2}, calls

    print(f"\nreply: {first['reply']}")
    print(f"profiles (@cached per user): ann={again['profile']}, bob={bob['profile']}")

    print("\nstats:")
    for ns, counters in cache.stats().items():
        print(f"  {ns:<10} " + "  ".join(f"{k}={v}" for k, v in counters.items()))
    assert cache.stats("langgraph")["hits"] >= 4 and cache.stats("profiles")["hits"] >= 3
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main())
