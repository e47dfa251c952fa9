"""Citations from hits, [n] markers in answers, the prompt template, and the [routes.NAME.rag] table."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from aiestack.context.citations import citations_for, citations_json, cited_indices
from aiestack.context.config import build_rag_routes, rag_route
from aiestack.context.prompt import DEFAULT_TEMPLATE, STOP, PromptTemplate, default_stop, sources_of
from aiestack.context.rerank import CrossEncoderReranker, LLMReranker
from aiestack.context.rewrite import LLMRewriter
from aiestack.errors import ConfigError
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.types import Chunk, Hit

pytestmark = pytest.mark.unit


def hits() -> list[Hit]:
    return [
        Hit(Chunk("c1", "d1", "Cats purr.", 0, {"source": "a.md", "title": "Cats", "start": 10, "end": 20,
                                                "heading_path": "Pets > Cats", "page": 2}), 0.9, "hybrid"),
        Hit(Chunk("c2", "d2", "Dogs bark.", 3, {}), 0.4, "bm25"),
    ]


def test_citations_carry_chunk_source_score_and_span() -> None:
    first, second = citations_for(hits())
    assert (first.index, first.chunk_id, first.source, first.title, first.score) == (1, "c1", "a.md", "Cats", 0.9)
    assert (first.start, first.end, first.heading, first.page, first.text) == (10, 20, "Pets > Cats", 2, "Cats purr.")
    assert (second.index, second.source, second.start, second.end, second.page) == (2, "", None, None, None)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Cats purr [1].", [1]),
        ("Both [2][1] and again [1].", [2, 1]),
        ("See [1, 2].", [1, 2]),
        ("See [1-3].", [1, 2, 3]),
        ("Out of range [7] and [0].", []),
        ("No markers.", []),
        ("A list [a] or [1.5] is not a marker.", []),
    ],
)
def test_cited_indices(answer: str, expected: list[int]) -> None:
    assert cited_indices(answer, 3) == expected


def test_citations_json_marks_what_the_answer_cites() -> None:
    out = citations_json(hits(), "Dogs bark [2].")
    assert [c["cited"] for c in out] == [False, True]
    assert out[0]["heading"] == "Pets > Cats" and out[0]["page"] == 2
    assert "cited" not in citations_json(hits())[0]


def test_default_template_numbers_the_sources() -> None:
    prompt = PromptTemplate().render("Do cats purr?", sources_of(hits(), max_chars=1500), collection="kb")
    assert "[1] Cats (Pets > Cats)\nCats purr." in prompt
    assert "[2] d2\nDogs bark." in prompt  # no title or source: the document id names it
    assert prompt.index("[1]") < prompt.index("[2]") < prompt.index("Question: Do cats purr?")
    assert prompt.endswith("Question: Do cats purr?\nAnswer:")
    assert "Example:" in prompt and prompt.index("Example:") < prompt.index("Sources:")  # one worked example first
    assert "\n\n\n" not in prompt
    empty = PromptTemplate().render("Do cats purr?", [], collection="kb")
    assert "(no sources were found)" in empty


def test_sources_are_cut_to_max_chars() -> None:
    long = [Hit(Chunk("c", "d", "word " * 100), 1.0, "bm25")]
    (source,) = sources_of(long, max_chars=50)
    assert len(source.text) <= 52 and source.text.endswith("…")


def test_custom_template_and_bad_templates() -> None:
    t = PromptTemplate("{{ collection }}: {% for s in sources %}<{{ s.n }}:{{ s.source }}>{% endfor %} {{ question }}")
    assert t.render("q?", sources_of(hits(), max_chars=100), collection="kb") == "kb: <1:a.md><2:d2> q?"
    with pytest.raises(ValueError, match="render"):
        PromptTemplate("{{ undefined_name }}")
    with pytest.raises(ValueError, match="render"):
        PromptTemplate("{% for %}")


def registry() -> ModelRegistry:
    return ModelRegistry([ModelEntry("judge", FakeModel(), "judge-up")])


def test_rag_table_defaults() -> None:
    plan = rag_route("kb", {}, registry())
    assert plan.collection == "kb" and plan.options.mode == "hybrid" and plan.options.k == 5
    assert plan.stop is None and plan.reranker is None and plan.rewriter is None
    assert plan.template.text == DEFAULT_TEMPLATE


def test_rag_table_builds_rerankers_and_rewriter(tmp_path: Path) -> None:
    plan = rag_route("kb", {"rerank": "llm", "rerank_model": "judge", "rewrite_model": "judge", "mmr": 0.5,
                            "mode": "bm25", "k": 3, "stop": ["\n\n"]}, registry())
    assert isinstance(plan.reranker, LLMReranker) and isinstance(plan.rewriter, LLMRewriter)
    assert plan.options.mmr_lambda == 0.5 and plan.options.mode == "bm25" and plan.stop == ("\n\n",)
    ce = rag_route("kb", {"rerank": "cross-encoder", "rerank_model": str(tmp_path)}, registry())
    assert isinstance(ce.reranker, CrossEncoderReranker)
    template = tmp_path / "t.j2"
    template.write_text("Q: {{ question }}", encoding="utf-8")
    assert rag_route("kb", {"template_file": str(template)}, registry()).template.render("x", [], collection="kb") == "Q: x"


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"mode": "fuzzy"}, "routes.r.rag.mode", "bm25"),
        ({"k": 0}, "routes.r.rag.k", "greater than or equal"),
        ({"topk": 3}, "routes.r.rag.topk", "did you mean"),
        ({"rerank": "llm"}, "routes.r.rag.rerank_model", "needs a rerank_model"),
        ({"rerank": "llm", "rerank_model": "nope"}, "routes.r.rag.rerank_model", "judge"),
        ({"rewrite_model": "nope"}, "routes.r.rag.rewrite_model", "unknown model"),
        ({"template": "{{ nope }}"}, "routes.r.rag.template", "question, sources"),
        ({"template": "a", "template_file": "b"}, "routes.r.rag.template", "keep one"),
        ({"template_file": "/no/such/file"}, "routes.r.rag.template_file", "cannot read"),
        ({"filter": {"field": "x", "op": "near", "value": 1}}, "routes.r.rag.filter", "op"),
    ],
)
def test_rag_table_errors_name_the_key(table: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        rag_route("kb", table, registry(), key="routes.r.rag")
    assert info.value.key == key
    assert words.lower() in str(info.value).lower()


def test_build_rag_routes_only_for_routes_with_a_collection() -> None:
    routes = {
        "plain": SimpleNamespace(collection=None, rag={}),
        "docs": SimpleNamespace(collection="kb", rag={"k": 2}),
    }
    built = build_rag_routes(routes, registry())
    assert set(built) == {"docs"} and built["docs"].options.k == 2
    with pytest.raises(ConfigError) as info:
        build_rag_routes({"bad": SimpleNamespace(collection=None, rag={"k": 2})}, registry())
    assert info.value.key == "routes.bad.rag"


def test_a_contextualised_chunk_is_cited_and_shown_without_its_context() -> None:
    from aiestack.context.contextual import SEPARATOR

    context = "From the ACME 2023 report."
    chunk = Chunk("c", "d", f"{context}{SEPARATOR}Revenue grew 3%.", 0, {"context": context, "start": 5, "end": 21})
    (cite,) = citations_for([Hit(chunk, 1.0, "bm25")])
    assert cite.text == "Revenue grew 3%." and (cite.start, cite.end) == (5, 21)
    (source,) = sources_of([Hit(chunk, 1.0, "bm25")], max_chars=100)
    assert source.text == "Revenue grew 3%."


def test_the_default_stop_ends_where_a_base_model_invents_the_next_source() -> None:
    # The embedded 270M model answered the README's demo question, then wrote "\n\n[4] RAG: ..."
    # after three sources: a made-up fourth source in the answer.
    assert default_stop(3) == (*STOP, "\n[4]")
    assert len(default_stop(12)) <= 4  # OpenAI accepts at most four stop sequences
