"""Backends are registered by URL scheme and imported only when a URL first uses them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import memo
from memo._backend import _REGISTRY, backend_from_url, register_backend
from memo._memory import MemoryBackend

ROOT = Path(__file__).resolve().parents[2]


def test_memory_urls_do_not_import_the_memcached_backend() -> None:
    code = (
        "import sys, memo; memo.Cache('memory://'); "
        "print('memo._memcached' in sys.modules, 'pymemcache' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


def test_a_registered_scheme_builds_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_REGISTRY, "scratch", "memo._memory:MemoryBackend")
    backend = backend_from_url("scratch://?max_entries=5", {})
    assert isinstance(backend, MemoryBackend) and backend.max_entries == 5
    with pytest.raises(memo.ConfigurationError, match="takes no host"):
        backend_from_url("scratch://somewhere", {})


def test_registering_checks_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("memo._backend._REGISTRY", dict(_REGISTRY))
    register_backend("Other", "memo._memory:MemoryBackend")
    from memo import _backend

    assert _backend._REGISTRY["other"] == "memo._memory:MemoryBackend"
    with pytest.raises(ValueError):
        register_backend("bad", "memo._memory")
    with pytest.raises(memo.ConfigurationError, match="unknown cache URL scheme"):
        backend_from_url("nosuch://x", {})
