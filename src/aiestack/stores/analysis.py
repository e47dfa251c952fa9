"""The one text analyser and BM25 of every term index (embedded, PostgreSQL, memory).

A collection moved from one store to another must rank the same, so tokenisation, lower-casing,
stop words, stemming and the BM25 formula are defined here once and used by the tantivy index of
the embedded store, the postings tables of the PostgreSQL store, the in-memory store and the query
side of all three.

The analyser was chosen on SciFact's *train* queries (``bench/retrieval.py --tune``): tantivy's
simple tokenizer (runs of letters and digits), tokens longer than 40 bytes dropped, lower-casing,
the English stop-word list and the English (Porter 2) stemmer (train nDCG@10 0.696 with stemming,
0.668 without; the stop words change nothing measurable and make queries shorter). It is a
tantivy ``TextAnalyzer`` (Rust, ~0.3 µs a token): the embedded store registers this very object as
its index's tokenizer, and the other stores call :meth:`Analyzer.analyze` on it.

BM25 is Lucene's and tantivy's, with their exact arithmetic, so that scores agree across stores to
float rounding (``tests/stores/test_bm25_parity.py``):

- ``idf = ln(1 + (N - n + 0.5) / (n + 0.5))`` with ``N`` chunks in the collection and ``n`` of
  them holding the term;
- a term contributes ``idf * (k1 + 1) * tf / (tf + k1 * (1 - b + b * dl / avgdl))`` with
  ``k1 = 1.2``, ``b = 0.75``, ``avgdl`` = the collection's tokens / chunks;
- ``dl`` is the chunk's token count *quantised to one byte* the way Lucene and tantivy store it
  (:func:`fieldnorm`: exact up to 40 tokens, then 4 significant bits);
- a query is the disjunction of its analysed terms, a term repeated in the query counts again.

One difference stays: tantivy counts deleted chunks in ``N`` and ``n`` (and their tokens in
``avgdl``) until it merges the segments that hold them; the PostgreSQL and memory stores keep exact
statistics. On a collection without replaced or deleted documents the three agree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tantivy

#: BM25 parameters (Lucene's and tantivy's defaults).
K1 = 1.2
B = 0.75
#: Tokens longer than this many bytes are dropped (base64 blobs, hashes, URLs without separators).
MAX_TOKEN_BYTES = 40
#: The name under which the embedded store registers the analyser in its tantivy index.
TOKENIZER_NAME = "aiestack_en"
#: What the analyser does, recorded beside indexes built with it.
ANALYZER_ID = "simple/remove_long40/lowercase/stop_en/porter2_en"


def _decode_fieldnorm(code: int) -> int:
    """Lucene's one-byte length code (``SmallFloat.byte4ToInt``), as tantivy uses it."""
    if code < 24:
        return code
    code -= 24
    bits, shift = code & 0b111, code >> 3
    return 24 + (bits if shift == 0 else (bits | 8) << (shift - 1))


#: The document length each one-byte code stands for (256 increasing values).
FIELDNORMS: tuple[int, ...] = tuple(_decode_fieldnorm(code) for code in range(256))


def fieldnorm(length: int) -> int:
    """A chunk's token count as BM25 sees it: rounded down to the nearest one-byte code."""
    if length <= 40:
        return max(length, 0)
    low, high = 0, 255
    while low < high:  # the largest code whose length is <= ``length``
        middle = (low + high + 1) // 2
        if FIELDNORMS[middle] <= length:
            low = middle
        else:
            high = middle - 1
    return FIELDNORMS[low]


def idf(chunks: int, frequency: int) -> float:
    """BM25's idf (never negative): ``chunks`` in the collection, ``frequency`` holding the term."""
    return math.log(1.0 + (chunks - frequency + 0.5) / (frequency + 0.5))


def term_weight(chunks: int, frequency: int) -> float:
    """``idf * (k1 + 1)``: the most one occurrence-saturated term can add to a score."""
    return idf(chunks, frequency) * (K1 + 1.0)


def length_norm(norm: int, average: float) -> float:
    """``k1 * (1 - b + b * dl / avgdl)`` for a quantised length ``norm``."""
    return K1 * (1.0 - B + B * norm / average)


def term_score(weight: float, tf: int, norm: int, average: float) -> float:
    """One term's contribution to a chunk's score (``weight`` from :func:`term_weight`)."""
    return weight * tf / (tf + length_norm(norm, average))


def text_analyzer(*, stop_words: bool = True, stem: bool = True) -> tantivy.TextAnalyzer:
    """The analyser as a tantivy ``TextAnalyzer`` (the options exist for ``bench/retrieval.py --tune``)."""
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(MAX_TOKEN_BYTES))
        .filter(tantivy.Filter.lowercase())
    )
    if stop_words:
        builder = builder.filter(tantivy.Filter.stopword("english"))
    if stem:
        builder = builder.filter(tantivy.Filter.stemmer("english"))
    return builder.build()


@dataclass(frozen=True, slots=True)
class Postings:
    """A batch of analysed texts: per (text, term) pair, ordered by text then term, the text's
    index, the term's index in ``vocabulary`` (first-seen order) and its frequency; and each
    text's token count."""

    vocabulary: list[str]
    text: np.ndarray  # int64
    term: np.ndarray  # int64
    tf: np.ndarray  # int64
    lengths: np.ndarray  # int64, one per text


class Analyzer:
    """Text to index terms, the same for documents and queries in every store."""

    def __init__(self, *, stop_words: bool = True, stem: bool = True) -> None:
        self.tantivy = text_analyzer(stop_words=stop_words, stem=stem)

    def analyze(self, text: str) -> list[str]:
        """The terms of ``text`` in order, repeats kept."""
        terms: list[str] = self.tantivy.analyze(text)
        return terms

    def counts(self, text: str) -> tuple[Counter[str], int]:
        """Term frequencies and the token count (the chunk's BM25 length before quantisation)."""
        terms = self.analyze(text)
        return Counter(terms), len(terms)

    def postings(self, texts: Sequence[str]) -> Postings:
        """A batch of texts as flat arrays (what :meth:`counts` gives per text, without a Python
        object per term: a SciFact load spent 0.3 ms a text counting terms in ``Counter``s, five
        times the analysis itself)."""
        terms: list[str] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            analysed = self.analyze(text)
            terms.extend(analysed)
            lengths[i] = len(analysed)
        codes: dict[str, int] = dict.fromkeys(terms, 0)  # first-seen order
        for code, term in enumerate(codes):
            codes[term] = code
        ids = np.fromiter(map(codes.__getitem__, terms), dtype=np.int64, count=len(terms))
        width = max(len(codes), 1)
        owners = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        pairs, tfs = np.unique(owners * width + ids, return_counts=True)  # sorted by text, then term
        return Postings(list(codes), pairs // width, pairs % width, tfs, lengths)

    def query(self, text: str) -> Counter[str]:
        """A query's terms, each with how often it occurs (a repeated term counts again)."""
        return Counter(self.analyze(text))

