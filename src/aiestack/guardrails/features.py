"""Lexical features for the injection classifier: hashed word and character n-grams.

Hashing (CRC-32 of each n-gram, modulo ``dim``) needs no vocabulary file, so the packaged weights
are one array. Character n-grams within words make the features robust to inflection and to the
German and French of the deepset set, where an English sentence encoder is weak.

One hand-written feature sits beside the n-grams, :func:`persona_imposed`: the two injection data sets
disagree about persona prompts, and this cue is how the ``lexical`` head tells them apart (see
:func:`persona_imposed` and docs/guardrails.md).

The ``static`` head adds :func:`static_features`: vectors of the packaged static embedder (the semantic
cache's, a Model2Vec distillation of all-MiniLM-L6-v2) for the whole text, its first and its last part,
and the largest value of each dimension over its tokens: what it is about, how it opens, how it ends
(deepset's injections are often a task switch appended to an ordinary question).
"""

from __future__ import annotations

import re
import zlib
from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

from aiestack.guardrails.base import holds_one

_WORD = re.compile(r"\w+", re.UNICODE)
#: Only the start of a long prompt is read (enough to judge it, and bounded in time).
MAX_CHARS = 4000
#: Words whose n-grams are remembered. Each costs about 1 KB; the most frequent few thousand words
#: cover most of any text (Zipf's law). It was 65,536 (~65 MB): the gateway's memory grew by ~1 KB
#: per request with new words until that filled (issue #13, defect 6).
WORD_CACHE_SIZE = 4096


#: A persona imposed on the assistant by the message itself ("I want you to act as", "now you are",
#: "pretend you are", "from now on", "ich möchte, dass Sie als", "stell dir vor", "jetzt bist du"). Every
#: alternative occurs in the *train* split of deepset/prompt-injections, where such prompts are labelled
#: injections (27 of 203; none of its 343 benign prompts); the jailbreak set's benign role-play instead
#: *defines* a character the way a system prompt does ("You are a medieval blacksmith named ..."), which
#: this cue does not match (26 of its 517 benign train prompts match it).
_PERSONA = re.compile(
    r"\b(?:i\s+want\s+you\s+to\s+act|i(?:'d|\s+would)\s+like\s+you\s+to\s+act|act\s+as\s+(?:a|an|if|my)\b|now\s+you\s+are"
    r"|you\s+are\s+now|from\s+now\s+on|pretend\s+(?:to\s+be|you\s+are|you're|that)|imagine\s+you\s+are"
    r"|ich\s+möchte,?\s+dass\s+(?:du|sie)\s+(?:als|sich)|stell\s+dir\s+vor|(?:nun|jetzt)\s+bist\s+du)",
    re.IGNORECASE,
)


#: Substrings of which a match of :data:`_PERSONA` holds one, in lower case (``act``; ``now``; ``pretend``;
#: ``imagine``; ``dass``, ``stell``, ``bist`` for the German). The pattern ignores case, and Python's
#: case-insensitive matching also folds ``ſ``, ``ı``, ``İ`` and the Kelvin sign onto ASCII letters, which
#: ``str.lower`` does not: the look-up decides only for ASCII text.
_PERSONA_NEEDS = ("act", "now", "pretend", "imagine", "dass", "stell", "bist")


def persona_imposed(text: str) -> float:
    """1.0 when the start of ``text`` imposes a persona on the assistant (:data:`_PERSONA`), else 0.0."""
    text = text[:MAX_CHARS]
    if text.isascii() and not holds_one(text.lower(), _PERSONA_NEEDS):
        return 0.0  # the pattern costs ~800 instructions a character; a text without its words skips it
    return 1.0 if _PERSONA.search(text) else 0.0


@lru_cache(maxsize=WORD_CACHE_SIZE)
def _word_ngrams(word: str, mask: int) -> tuple[bytes, int, bytes]:
    """One word's hashed unigram and character 3-5-grams (native int64 bytes), the CRC-32 of the start of
    every word bigram it opens (``b"b" + word + b" "``: the next word's bytes finish the bigram's CRC) and
    the word in UTF-8 (memoised, bounded: words repeat)."""
    crc = zlib.crc32
    raw = word.encode()
    out = [crc(b"w" + raw) & mask]
    padded = f" {word} "
    n = len(padded)
    for size in (3, 4, 5):
        for i in range(n - size + 1):
            out.append(crc(padded[i : i + size].encode()) & mask)
    return array("q", out).tobytes(), crc(b" ", crc(raw, crc(b"b"))), raw


def _indices(text: str, mask: int) -> np.ndarray:
    """The hashed n-grams of ``text`` (its first :data:`MAX_CHARS` characters), one int64 each, repeats
    kept: each word's n-grams, then the word bigrams (the CRC of ``b"b" + prev + b" " + word``)."""
    crc = zlib.crc32
    chunks: list[bytes] = []
    bigrams = array("q")
    opened = -1  # the CRC state the previous word left; none before the first word
    for word in _WORD.findall(text[:MAX_CHARS].lower()):
        grams, opens, raw = _word_ngrams(word, mask)
        chunks.append(grams)
        if opened >= 0:
            bigrams.append(crc(raw, opened) & mask)
        opened = opens
    chunks.append(bigrams.tobytes())
    return np.frombuffer(b"".join(chunks), dtype=np.int64)


def hashed_ngrams_sparse(text: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hashed_ngrams` as (indices, values) of its non-zero entries: cheaper for one dot product.

    The indices are sorted and counted in NumPy (a run-length count of the sorted array), then the
    logarithm and the norm (``np.linalg.norm``'s ``sqrt(v·v)``): the same arrays as ``np.unique(...,
    return_counts=True)`` and ``np.linalg.norm`` gave. On the gateway's request path each NumPy call on
    a tiny array costs thousands of instructions, and turning a Python list into an array costs hundreds
    an element, so the n-grams arrive as bytes (:func:`_indices`) and no list is converted; this runs on
    every new prompt."""
    idx = np.sort(_indices(text, dim - 1))
    n = len(idx)
    starts = np.empty(n + 1, dtype=bool)  # where a run of equal indices starts; the end closes the last
    starts[0] = starts[n] = True
    np.not_equal(idx[1:], idx[:-1], out=starts[1:n])
    bounds = starts.nonzero()[0]
    values = np.log1p((bounds[1:] - bounds[:-1]).astype(np.float32))
    norm = float(np.sqrt(values.dot(values)))
    return idx[bounds[:-1]], (values / norm if norm > 0 else values)


def hashed_ngrams(text: str, dim: int) -> np.ndarray:
    """An L2-normalised vector of log(1 + count) of hashed word 1-2-grams and character 3-5-grams."""
    vec = np.bincount(_indices(text, dim - 1), minlength=dim).astype(np.float32)
    np.log1p(vec, out=vec)
    norm = float(np.linalg.norm(vec))
    if norm > 0:
        vec /= norm
    return vec


class Pooling(Protocol):
    """What :func:`static_features` needs of the static embedder
    (:class:`aiestack.models.static_embeddings.StaticEmbeddings`)."""

    def pooled(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


_PART_END = re.compile(r"[.!?\n]+")
#: Vectors :func:`static_features` puts side by side (each the embedder's dimension).
STATIC_BLOCKS = 4


def text_parts(text: str) -> tuple[str, str]:
    """The first and the last part of ``text`` (pieces between sentence ends and line breaks) that have
    at least two words; ``text`` itself for both when none has."""
    parts = [p for p in _PART_END.split(text) if len(p.split(None, 2)) >= 2]
    return (parts[0], parts[-1]) if parts else (text, text)


def static_features(embedder: Pooling, text: str) -> np.ndarray:
    """The ``static`` head's features of ``text`` (its first :data:`MAX_CHARS` characters): the unit-length
    mean of its token vectors, the means of its first and last parts (:func:`text_parts`), and the
    unit-length per-dimension maximum over its tokens, side by side (:data:`STATIC_BLOCKS` × the
    embedder's dimension, float32). One tokenisation of three texts: about 0.1 ms for a short prompt."""
    text = text[:MAX_CHARS]
    first, last = text_parts(text)
    # Each distinct text pooled once (a one-sentence prompt's first and last parts are one text), its rows
    # then read twice: the same values as pooling all three.
    distinct = list(dict.fromkeys((text, first, last)))
    means, maxes = embedder.pooled(distinct)
    at = distinct.index
    return np.concatenate([means[0], means[at(first)], means[at(last)], maxes[0]])
