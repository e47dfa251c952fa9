"""A deterministic embedding model for tests: hashed bag of words, so cosine follows word overlap.

Each word (lower-cased ``\\w+``) adds 1 to one of ``dim`` buckets chosen by its hash; vectors are
L2-normalised. Texts sharing words are close, texts sharing none are orthogonal (up to bucket
collisions), which makes the expected ranking of a small test corpus easy to reason about without
loading a real model.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+")


def bag_of_words_vector(text: str, dim: int = 64) -> list[float]:
    v = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


class BagOfWordsEmbeddings:
    """An :class:`~aiestack.models.base.EmbeddingModel` for tests; ``calls`` records each batch."""

    def __init__(self, dim: int = 64, name: str = "bag-of-words") -> None:
        self.name = name
        self.dim = dim
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [bag_of_words_vector(t, self.dim) for t in texts]

    async def aclose(self) -> None:
        return None
