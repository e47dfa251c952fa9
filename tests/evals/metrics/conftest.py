"""Shared fixtures for metric tests: sample builders, a scripted judge and a toy embedding model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from aiestack.evals.base import Sample
from aiestack.models.fake import FakeModel
from aiestack.streams import Accumulator
from aiestack.types import ChatRequest, Completion, Example, Message

MakeSample = Callable[..., Sample]


@pytest.fixture
def make_sample() -> MakeSample:
    def make(output: str, reference: Any = None, *, contexts: Sequence[str] = (), **fields: Any) -> Sample:
        example = Example(
            id=fields.pop("example_id", "ex1"),
            input=fields.pop("input", {"question": "q?"}),
            reference=reference,
            metadata=fields.pop("metadata", {}),
        )
        return Sample(example=example, system="sys", output=output, contexts=tuple(contexts), **fields)

    return make


@pytest.fixture
def judge_model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def judge_call(judge_model: FakeModel) -> Callable[[ChatRequest], Any]:
    async def call(request: ChatRequest) -> Completion:
        acc = Accumulator(Completion(message=Message(role="assistant"), model="judge", provider="fake"))
        async for delta in judge_model.stream(request):
            acc.add(delta)
        return acc.completion()

    return call


class BagOfLettersEmbeddings:
    """Deterministic toy embeddings: letter counts. Similar spelling → similar vectors."""

    name = "letters"
    dim = 26

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[float(t.lower().count(chr(ord("a") + i))) for i in range(26)] for t in texts]

    async def aclose(self) -> None:
        return None


@pytest.fixture
def embeddings() -> BagOfLettersEmbeddings:
    return BagOfLettersEmbeddings()
