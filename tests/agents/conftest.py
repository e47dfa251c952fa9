"""A stack on scripted fake models for the agent tests (memory store, content tracing on)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiestack.build import Stack, build_stack
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore


class TextOnlyModel(FakeModel):
    """A fake model that, like the embedded llama_cpp model, takes no ``tools`` parameter."""

    native_tools = False


def make_stack(tmp_path: Path, **settings: Any) -> tuple[Stack, FakeModel, TextOnlyModel]:
    model, text = FakeModel(), TextOnlyModel()
    base: dict[str, Any] = {
        "data_dir": tmp_path,
        "embedded_model": False,
        "default_model": "m",
        "tracing": {"content": True},
        "pricing": {"m": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}},
    }
    base.update(settings)
    stack = build_stack(
        Settings(**base),
        store=MemoryExchangeStore(),
        models=[ModelEntry("m", model, "m"), ModelEntry("t", text, "t")],
    )
    return stack, model, text


@pytest.fixture
async def agent_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, FakeModel, TextOnlyModel]]:
    stack, model, text = make_stack(tmp_path)
    yield stack, model, text
    await stack.aclose()
