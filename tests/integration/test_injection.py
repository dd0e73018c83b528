"""Parameters LangGraph injects: decided by memo.langgraph, by annotation identity, as LangGraph decides.

No `from __future__ import annotations` here: the annotations below are objects
unless written as strings on purpose.
"""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import StreamWriter

import memo
from memo._binding import injected_parameters

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Context:
    user_id: str


class RuntimeSettings:
    pass


class RunnableConfigLookalike(dict):  # type: ignore[type-arg]
    pass


def node(
    state: dict,  # type: ignore[type-arg]
    config: RunnableConfig,
    writer: StreamWriter,
    store: BaseStore,
    runtime: Runtime[Context],
    previous: Any = None,
) -> None: ...


def optional_node(state: dict, config: Optional[RunnableConfig], store: Optional[BaseStore]) -> None: ...  # type: ignore[type-arg]  # noqa: UP045


def union_node(state: dict, config: RunnableConfig | None) -> None: ...  # type: ignore[type-arg]


def string_node(state: dict, config: "RunnableConfig", store: "BaseStore") -> None: ...  # type: ignore[type-arg]


def string_union_node(state: dict, config: "RunnableConfig | None") -> None: ...  # type: ignore[type-arg]


def unannotated(state, config, store, writer, runtime): ...  # type: ignore[no-untyped-def]


def lookalikes(state: dict, config: RunnableConfigLookalike, runtime: RuntimeSettings) -> None: ...  # type: ignore[type-arg]


def settings_named_config(state: dict, config: RuntimeSettings) -> None: ...  # type: ignore[type-arg]


def runtime_of_another_class(state: dict, config: RunnableConfig, runtime: RuntimeSettings) -> None: ...  # type: ignore[type-arg]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (node, {"config", "writer", "store", "runtime"}),
        (optional_node, {"config", "store"}),
        (union_node, {"config"}),
        (string_node, {"config", "store"}),
        (string_union_node, set()),  # LangGraph compares the string as written: not injected
        (unannotated, set()),  # nothing proves LangGraph is the caller: kept in the key
        (lookalikes, set()),
        (settings_named_config, set()),
        (runtime_of_another_class, {"config"}),
    ],
)
def test_injected_parameters_follow_langgraphs_rule_by_identity(fn: Any, expected: set[str]) -> None:
    assert injected_parameters(fn) == expected


def test_keys_leave_out_only_injected_parameters() -> None:
    cache = memo.Cache("memory://")
    cached_node = cache.cached()(union_node)
    plain = cache.cached()(settings_named_config)
    assert cached_node.key_for({"a": 1}, {"configurable": {"u": 1}}) == cached_node.key_for({"a": 1}, None)
    with pytest.raises(memo.UnkeyableArgumentError, match="'config'"):
        plain.key_for({"a": 1}, RuntimeSettings())


def test_the_core_names_no_langgraph_type() -> None:
    core = Path(memo.__file__).parent
    for module in ("_binding", "_canonical", "_keys", "_decorator", "_cache"):
        text = (core / f"{module}.py").read_text()
        found = re.findall(r"RunnableConfig|StreamWriter|BaseStore|Runtime\b|\"config\"|\"store\"", text)
        assert not found, (module, found)


IMPORT_ORDER = """
import sys
if sys.argv[1] == "first":
    import langgraph.graph
import memo

cache = memo.Cache("memory://")

@cache.cached(ns="n")
def node(state, config):
    return state

print(node.key_for({"a": 1}, {"configurable": {"user": 1}}).rsplit(":", 1)[1])
"""


def test_keys_do_not_depend_on_import_order() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    keys = {
        subprocess.run(
            [sys.executable, "-c", IMPORT_ORDER, order], capture_output=True, text=True, env=env, check=True
        ).stdout
        for order in ("first", "never")
    }
    assert len(keys) == 1, keys


def test_decorating_without_framework_annotations_never_imports_langgraph() -> None:
    code = (
        "import sys, memo\n"
        "@memo.Cache('memory://').cached()\n"
        "def f(x: int, config: dict, runtime: 'Settings') -> int: return x\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'langgraph', 'langchain_core'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# -- functions declared LangGraph nodes: LangGraph's rule by name, annotated or not -----------


def _marked(fn: Any) -> Any:
    from memo.langgraph import node

    return node(fn)


def marked_unannotated(state, config, store, writer, runtime, previous=None, error=None): ...  # type: ignore[no-untyped-def]


def marked_keyword_only(state, *, runtime): ...  # type: ignore[no-untyped-def]


def marked_with_other_types(state: dict, config: dict, runtime: RuntimeSettings) -> None: ...  # type: ignore[type-arg]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (marked_unannotated, {"config", "store", "writer", "runtime"}),  # previous, error: data
        (marked_keyword_only, {"runtime"}),
        # LangGraph injects `runtime` whatever its annotation, and not a `config: dict`:
        (marked_with_other_types, {"runtime"}),
        (string_union_node, set()),  # not injected by LangGraph either
    ],
)
def test_a_node_leaves_out_what_langgraph_injects_by_name(fn: Any, expected: set[str]) -> None:
    before = injected_parameters(fn)
    assert injected_parameters(_marked(fn)) == expected
    assert before <= expected


def test_node_refuses_what_it_cannot_mark() -> None:
    cache = memo.Cache("memory://")

    @cache.cached()
    def already(state, config): ...  # type: ignore[no-untyped-def]

    with pytest.raises(memo.ConfigurationError, match="under @cached"):
        _marked(already)
    with pytest.raises(memo.ConfigurationError, match="under @cached"):
        _marked(42)


def test_the_mark_is_no_framework_name_for_the_core() -> None:
    from memo._binding import INJECTION_RULES, INJECTS_MARK

    def f(state, config): ...  # type: ignore[no-untyped-def]

    setattr(f, INJECTS_MARK, "os")  # only memo's own integration modules are asked
    assert injected_parameters(f) == frozenset()
    setattr(f, INJECTS_MARK, INJECTION_RULES["langgraph"])
    assert injected_parameters(f) == {"config"}
