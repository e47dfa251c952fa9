"""What grew with every request in the memory soak stays bounded (issue #13, defect 6; bench/soak_memory.py
shows the soak itself). Each structure is fed past its bound and must not pass it."""

from __future__ import annotations

import pytest

from aiestack.guardrails import features
from aiestack.models.fake import KEEP_REQUESTS, FakeModel
from aiestack.settings import TracingSettings
from aiestack.tracing import Tracing
from aiestack.tracing.stage import _NAMES_KEPT, Trace
from aiestack.types import ChatRequest, Message

pytestmark = pytest.mark.unit


def test_the_injection_features_word_cache_is_bounded() -> None:
    for i in range(features.WORD_CACHE_SIZE + 500):
        features.hashed_ngrams_sparse(f"unseenword{i}", 1 << 18)
    info = features._word_ngrams.cache_info()
    assert info.maxsize == features.WORD_CACHE_SIZE and info.currsize <= features.WORD_CACHE_SIZE


async def test_the_fake_model_remembers_only_the_newest_requests() -> None:
    fake = FakeModel()
    for i in range(KEEP_REQUESTS + 5):
        async for _ in fake.stream(ChatRequest(model="f", messages=(Message("user", f"q{i}"),))):
            pass
    assert len(fake.requests) == KEEP_REQUESTS and fake.requests[-1].messages[0].text == f"q{KEEP_REQUESTS + 4}"


def test_the_trace_stages_model_name_memo_is_bounded() -> None:
    class Sink:
        def submit_exchange(self, record: object) -> None: ...
        def submit_span(self, span: object) -> None: ...

    trace = Trace(Tracing(TracingSettings(), Sink()), redact=str.upper)  # type: ignore[arg-type]
    for i in range(_NAMES_KEPT * 2 + 3):
        assert trace._name(f"model-{i}") == f"MODEL-{i}"
    assert len(trace._names) <= _NAMES_KEPT
