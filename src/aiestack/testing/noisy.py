"""A noisy oracle for test-time compute: right with a known probability per sample, else one wrong answer.

:class:`NoisyOracle` answers a question whose gold number it knows with ``#### <gold>`` with
probability ``accuracy`` and ``#### <gold + 1>`` otherwise (a single distractor: the worst case for a
vote, where the right answer must win a strict majority). The draw depends only on the question and
the request's ``seed`` (a sampling route gives sample *i* the seed ``seed + i``), so a run is
reproducible however the samples are scheduled.

:func:`majority_accuracy` is what binomial voting predicts for it: the probability that the right
answer wins a vote of ``n`` samples, ties going to the answer that came first.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import AsyncIterator, Mapping

from aiestack.models.base import Health
from aiestack.types import ChatRequest, Delta, Usage, last_user_text


def majority_accuracy(accuracy: float, n: int) -> float:
    """P(the right answer wins a majority vote of ``n`` samples) with one distractor.

    More than half right wins; exactly half (even ``n``) wins when a right answer came first, which
    by symmetry is half the time.
    """
    total = 0.0
    for k in range(n + 1):
        p = math.comb(n, k) * accuracy**k * (1 - accuracy) ** (n - k)
        if 2 * k > n:
            total += p
        elif 2 * k == n:
            total += p / 2
    return total


class NoisyOracle:
    """A chat model that knows ``gold`` (question text → number) and is right with probability ``accuracy``."""

    provider = "noisy-oracle"

    def __init__(self, gold: Mapping[str, float], accuracy: float) -> None:
        self._gold = dict(gold)
        self.accuracy = accuracy
        self.calls = 0

    def right(self, question: str, seed: int) -> bool:
        """Whether the sample with ``seed`` for ``question`` is right (the draw the answer is made from)."""
        digest = hashlib.blake2b(f"{question}|{seed}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "big")).random() < self.accuracy

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        self.calls += 1
        question = last_user_text(request.messages)
        gold = self._gold[question]
        value = gold if self.right(question, request.params.seed or 0) else gold + 1
        shown = str(int(value)) if float(value).is_integer() else repr(float(value))  # never 1e+06 notation
        text = f"Working it out step by step. #### {shown}"
        yield Delta(text=text)
        yield Delta(finish_reason="stop", usage=Usage(input_tokens=len(question) // 4, output_tokens=8))

    async def check(self, model: str) -> Health:
        return Health(ok=True, detail=f"right with p={self.accuracy}")

    async def aclose(self) -> None:
        return None
