"""The notebooks under examples/ run, in a real Jupyter kernel, against the suite's memcached.

Each notebook reads the server's URL from `MEMO_URL`; the test checks what its
cells print, so a notebook that runs but shows the wrong thing fails too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ports import refused_url

import memo

try:
    import nbclient
    import nbformat
except ImportError:  # pragma: no cover - the dev group installs them; CI must not skip
    if os.environ.get("CI"):
        raise
    pytest.skip("nbclient/nbformat/ipykernel are not installed", allow_module_level=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def execute(path: Path) -> list[str]:
    """Run every cell of a notebook; return each code cell's printed text."""
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    outputs = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not [out for out in cell.outputs if out.output_type == "error"]
            outputs.append("".join(out.get("text", "") for out in cell.outputs))
    return outputs


def check_langgraph_cache_notebook(monkeypatch: pytest.MonkeyPatch, url: str) -> str:
    """Run the notebook with `MEMO_URL=url`; check what it shows; return its first cell's output."""
    monkeypatch.setenv("MEMO_URL", url)  # the kernel inherits it
    start = time.perf_counter()
    setup, _, first, second, per_user, cleared, stats, _ = execute(EXAMPLES / "langgraph_cache.ipynb")
    assert time.perf_counter() - start < 20
    assert "served from the cache: []" in first
    # The rerun: each node's update carries LangGraph's cache-hit marker.
    assert second.count("'__metadata__': {'cached': True}") == 2
    assert "served from the cache: ['classify', 'summarize']" in second
    assert "ann -> {'user': 'ann', 'plan': 'pro'}" in per_user
    assert "bob -> {'user': 'bob', 'plan': 'free'}" in per_user
    assert "computed for: ['ann', 'bob']" in per_user
    assert "served from the cache: ['classify']" in cleared
    counters = {line.split()[0]: line for line in stats.splitlines()}
    assert "hits=3" in counters["langgraph"] and "misses=3" in counters["langgraph"]
    assert "hits=2" in counters["profiles"] and "errors=0" in counters["total"]
    return setup


@pytest.mark.memcached
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Jupyter's own machinery, not memo's
def test_langgraph_cache_notebook(memcached_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = check_langgraph_cache_notebook(monkeypatch, memcached_url)
    assert setup.splitlines() == [f"memo {memo.__version__} on {memcached_url}"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_langgraph_cache_notebook_without_memcached(monkeypatch: pytest.MonkeyPatch) -> None:
    url = refused_url()  # a port nothing listens on
    setup = check_langgraph_cache_notebook(monkeypatch, url)
    assert setup.splitlines() == [
        f"no memcached answers at {url}: this notebook runs on memory:// instead",
        f"memo {memo.__version__} on memory://",
    ]
