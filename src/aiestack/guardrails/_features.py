"""Lexical features for the injection classifier: hashed word and character n-grams.

Hashing (CRC-32 of each n-gram, modulo ``dim``) needs no vocabulary file, so the packaged weights
are one array. Character n-grams within words make the features robust to inflection and to the
German and French of the deepset set, where an English sentence encoder is weak.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
#: Only the start of a long prompt is read (enough to judge it, and bounded in time).
MAX_CHARS = 4000


def hashed_ngrams(text: str, dim: int) -> np.ndarray:
    """An L2-normalised vector of log(1 + count) of hashed word 1-2-grams and character 3-5-grams."""
    vec = np.zeros(dim, dtype=np.float32)
    words = _WORD.findall(text[:MAX_CHARS].lower())
    if not words:
        return vec
    mask = dim - 1
    crc = zlib.crc32
    idx: list[int] = []
    prev = ""
    for w in words:
        idx.append(crc(b"w" + w.encode()) & mask)
        if prev:
            idx.append(crc(b"b" + prev.encode() + b" " + w.encode()) & mask)
        prev = w
        padded = f" {w} "
        n = len(padded)
        for size in (3, 4, 5):
            for i in range(n - size + 1):
                idx.append(crc(padded[i : i + size].encode()) & mask)
    np.add.at(vec, np.asarray(idx, dtype=np.int64), 1.0)
    np.log1p(vec, out=vec)
    norm = float(np.linalg.norm(vec))
    if norm > 0:
        vec /= norm
    return vec
