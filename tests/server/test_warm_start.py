"""The server loads the embedding model at start, so the first request does not wait for it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiestack.build import Stack, build_stack
from aiestack.server.app import create_app
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings

pytestmark = pytest.mark.unit


class _Counting(BagOfWordsEmbeddings):
    """A model that loads its weights lazily, like the packaged MiniLM."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.batches: list[Sequence[str]] = []

    async def load(self) -> None:
        self.loads += 1

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return await super().embed(texts)


def _stack(tmp_path: Path, embeddings: _Counting | None) -> Stack:
    settings = Settings(
        data_dir=tmp_path, embedded_model=False, default_model="fake", models={"fake": {"provider": "fake"}}
    )
    stack = build_stack(settings, store=MemoryExchangeStore())
    stack.resources.use(embeddings=embeddings)  # what `aiestack serve` does when the semantic cache is on
    return stack


def test_the_embedding_model_is_loaded_before_the_first_request(tmp_path: Path) -> None:
    embeddings = _Counting()
    with TestClient(create_app(lambda: _stack(tmp_path, embeddings))) as client:
        assert embeddings.loads == 1 and embeddings.batches == []  # loaded during start-up, nothing embedded
        assert client.get("/health").status_code == 200


def test_nothing_is_loaded_when_no_wing_asked_for_embeddings(tmp_path: Path) -> None:
    with TestClient(create_app(lambda: _stack(tmp_path, None))) as client:
        assert not client.app.state.stack.resources.embeddings_built  # type: ignore[attr-defined]


def test_the_server_freezes_what_start_up_built_after_warming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    calls: list[str] = []
    embeddings = _Counting()
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(f"collect after {embeddings.loads} load(s)") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    with TestClient(create_app(lambda: _stack(tmp_path, embeddings), freeze_heap=True)) as client:
        assert calls == ["collect after 1 load(s)", "freeze"]  # garbage first, then the warm heap frozen
        assert client.get("/health").status_code == 200
    calls.clear()
    with TestClient(create_app(lambda: _stack(tmp_path, _Counting()))):
        assert calls == []  # an app embedded in another process leaves its collector alone


def test_the_server_entry_point_asks_for_the_frozen_heap_and_one_blas_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from aiestack.server import main

    seen: dict[str, object] = {}
    monkeypatch.setattr(main, "create_app", lambda factory, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(main.sys, "setswitchinterval", lambda _s: None)
    monkeypatch.setattr(main, "threadpool_limits", lambda **kwargs: seen.update(blas=kwargs))
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path))
    main.app_factory()
    assert seen == {"freeze_heap": True, "blas": {"limits": 1, "user_api": "blas"}}  # and BLAS on the loop's thread only
