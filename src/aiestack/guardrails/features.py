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
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

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


def persona_imposed(text: str) -> float:
    """1.0 when the start of ``text`` imposes a persona on the assistant (:data:`_PERSONA`), else 0.0."""
    return 1.0 if _PERSONA.search(text[:MAX_CHARS]) else 0.0


@lru_cache(maxsize=WORD_CACHE_SIZE)
def _word_ngrams(word: str, mask: int) -> tuple[int, ...]:
    """The hashed unigram and character 3-5-grams of one word (memoised, bounded: words repeat)."""
    crc = zlib.crc32
    out = [crc(b"w" + word.encode()) & mask]
    padded = f" {word} "
    n = len(padded)
    for size in (3, 4, 5):
        for i in range(n - size + 1):
            out.append(crc(padded[i : i + size].encode()) & mask)
    return tuple(out)


def _indices(text: str, mask: int) -> list[int]:
    words = _WORD.findall(text[:MAX_CHARS].lower())
    crc = zlib.crc32
    idx: list[int] = []
    prev = ""
    for w in words:
        idx += _word_ngrams(w, mask)
        if prev:
            idx.append(crc(b"b" + prev.encode() + b" " + w.encode()) & mask)
        prev = w
    return idx


def hashed_ngrams_sparse(text: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hashed_ngrams` as (indices, values) of its non-zero entries: cheaper for one dot product.

    The indices come sorted and counted in Python (a prompt has a few hundred), then NumPy takes the
    logarithm and the norm (``np.linalg.norm``'s ``sqrt(v·v)``): the same arrays as ``np.unique(...,
    return_counts=True)`` and ``np.linalg.norm`` gave, in a third of the NumPy calls. On the gateway's
    request path each NumPy call on a tiny array costs several microseconds (cold code), and this runs
    on every new prompt."""
    idx = _indices(text, dim - 1)
    idx.sort()
    keys: list[int] = []
    counts: list[int] = []
    last = -1
    for i in idx:
        if i == last:
            counts[-1] += 1
        else:
            keys.append(i)
            counts.append(1)
            last = i
    values = np.log1p(np.array(counts, dtype=np.float32))
    norm = float(np.sqrt(values.dot(values)))
    return np.array(keys, dtype=np.int64), (values / norm if norm > 0 else values)


def hashed_ngrams(text: str, dim: int) -> np.ndarray:
    """An L2-normalised vector of log(1 + count) of hashed word 1-2-grams and character 3-5-grams."""
    vec = np.bincount(np.asarray(_indices(text, dim - 1), dtype=np.int64), minlength=dim).astype(np.float32)
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
    means, maxes = embedder.pooled([text, first, last])
    return np.concatenate([means[0], means[1], means[2], maxes[0]])
