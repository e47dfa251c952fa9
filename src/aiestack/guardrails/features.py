"""Lexical features for the injection classifier: hashed word and character n-grams.

Hashing (CRC-32 of each n-gram, modulo ``dim``) needs no vocabulary file, so the packaged weights
are one array. Character n-grams within words make the features robust to inflection and to the
German and French of the deepset set, where an English sentence encoder is weak.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
#: Only the start of a long prompt is read (enough to judge it, and bounded in time).
MAX_CHARS = 4000
#: Words whose n-grams are remembered. Each costs about 1 KB; the most frequent few thousand words
#: cover most of any text (Zipf's law). It was 65,536 (~65 MB): the gateway's memory grew by ~1 KB
#: per request with new words until that filled (issue #13, defect 6).
WORD_CACHE_SIZE = 4096


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
    """:func:`hashed_ngrams` as (indices, values) of its non-zero entries: cheaper for one dot product."""
    idx, counts = np.unique(np.asarray(_indices(text, dim - 1), dtype=np.int64), return_counts=True)
    values = np.log1p(counts.astype(np.float32))
    norm = float(np.linalg.norm(values))
    return idx, (values / norm if norm > 0 else values)


def hashed_ngrams(text: str, dim: int) -> np.ndarray:
    """An L2-normalised vector of log(1 + count) of hashed word 1-2-grams and character 3-5-grams."""
    vec = np.bincount(np.asarray(_indices(text, dim - 1), dtype=np.int64), minlength=dim).astype(np.float32)
    np.log1p(vec, out=vec)
    norm = float(np.linalg.norm(vec))
    if norm > 0:
        vec /= norm
    return vec
