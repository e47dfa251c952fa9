"""Prompt-lookup speculative decoding for the embedded model (greedy requests).

Extractive answers — RAG answers that quote their context, JSON fields copied from a document,
code edits — repeat spans of the prompt. Prompt lookup (Saxena, 2023, "prompt-lookup decoding";
llama.cpp's ``lookup`` example; vLLM's ``ngram`` speculator) guesses the next tokens by finding the
last few generated tokens earlier in the prompt (or the answer) and proposing what followed them
there. The model then checks the whole guess in one batched forward pass, which pays where a pass
over k tokens costs much less than k passes over one (memory-bound decoding: a GPU, a larger model).
It does not pay with Gemma 3 270M on a 2-core CPU (bench/README.md, 2026-12-07): every checked
position needs its logits, so a batch of k pays the 262,144 × 640 output projection k times, and the
270M body is compute-bound there too; measured, a batch of 2 costs ~2× one token, 4 ~2.3–3×, 11
~5×, so a step would have to yield 1.6–2.4 tokens to break even, and RAG answers yield 1.45–1.8.

Only greedy requests (temperature 0, no penalties, no grammar, no logprobs) are drafted: there the
check is each position's argmax against the drafted token, so the answer is the one plain greedy
decoding gives — except where two tokens are nearly tied: llama.cpp's batched matrix products round
differently from its single-token ones, so a batched check can flip such a near-tie (reusing a
cached prompt prefix, which evaluates fewer tokens in the last batch, does the same). Gemma 3 270M
is often that close: it continues "The capital of France is" differently from the fifth token on,
and 3–4 of 8 answers on the docs collection changed (at top-2 logit gaps of 0.04–0.14). That, and
the speed above, is why it is off by default (``prompt_lookup = 0``): turn it on only where
``bench/embedded_speedups.py --sections lookup`` measures it faster. Everything else decodes one
token at a time.

llama-cpp-python's own ``LlamaPromptLookupDecoding`` (``Llama(draft_model=...)``) is not used:
it turns on ``logits_all``, which copies every prompt position's logits (1 MiB per token for
Gemma's 262,144-entry vocabulary) into a Python array, and its score array is sized for
``n_ctx`` rows (4 GiB at 4096). Here only the drafted positions' logits are read, straight from
llama.cpp's buffer.

The draft length adapts: it starts at ``max_draft``, drops to one more than the number of tokens
accepted after a miss, and grows back by one after each full acceptance, so text that does not copy
its prompt pays for short drafts only (and none at all when no n-gram repeats).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from llama_cpp import Llama

MIN_NGRAM = 2


@dataclass(slots=True)
class LookupStats:
    """Counters a drafting model adds to (bench/embedded_speedups.py shows them per answer).

    ``decode_s[b]`` / ``decode_n[b]``: seconds spent in, and number of, llama.cpp decodes of a
    batch of ``b`` tokens (the token to check plus ``b - 1`` drafted ones); ``b = 1`` is a step with
    no draft, what plain decoding pays per token. ``step_s``: whole steps (decode, draft search,
    argmax, bookkeeping), so ``step_s - sum(decode_s)`` is this loop's own overhead.
    """

    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    step_s: float = 0.0
    decode_s: dict[int, float] = field(default_factory=dict)
    decode_n: dict[int, int] = field(default_factory=dict)

    def add_decode(self, size: int, seconds: float) -> None:
        self.decode_s[size] = self.decode_s.get(size, 0.0) + seconds
        self.decode_n[size] = self.decode_n.get(size, 0) + 1


def find_draft(history: np.ndarray, *, max_ngram: int, max_draft: int) -> np.ndarray:
    """Up to ``max_draft`` tokens that followed the latest earlier occurrence of the history's tail.

    Tries the longest tail first (``max_ngram`` tokens, down to :data:`MIN_NGRAM`); among the
    occurrences of a tail, the most recent one wins. Returns an empty array when no tail repeats.
    """
    n = len(history)
    if max_draft <= 0:
        return history[:0]
    for size in range(min(max_ngram, n - 1), MIN_NGRAM - 1, -1):
        tail = history[n - size :]
        windows = np.lib.stride_tricks.sliding_window_view(history[: n - 1], size)
        hits = np.flatnonzero((windows == tail).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + size
            return history[start : min(start + max_draft, n)]
    return history[:0]


def greedy_lookup_tokens(
    llm: Llama,
    prompt: Sequence[int],
    *,
    max_draft: int,
    max_ngram: int,
    limit: int,
    stats: LookupStats | None = None,
) -> Iterator[int]:
    """Greedy tokens for ``prompt``, drafted from the prompt and checked in batches.

    Yields the same tokens as ``llm.generate(prompt, temp=0)`` would, at most ``limit`` of them
    (the caller stops reading at end of generation). The first token comes from ``llm.generate``,
    which reuses the KV cache of the common prefix with the previous request; afterwards the model's
    recorded tokens (``input_ids``/``n_tokens``) always describe its KV cache, so the next request's
    prefix reuse stays correct. ``stats``, when given, is added to (steps, drafts, timings).
    """
    import llama_cpp

    first_pass = llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
    token = next(first_pass)
    first_pass.close()
    n_vocab = llm.n_vocab()
    n_ctx = llm.n_ctx()
    history = np.empty(len(prompt) + limit + max_draft + 1, dtype=np.intc)
    history[: len(prompt)] = prompt
    size = len(prompt)
    draft_len = max_draft
    produced = 0
    stats = LookupStats() if stats is None else stats
    clock = time.perf_counter
    try:
        while True:
            yield token
            produced += 1
            history[size] = token
            size += 1
            if produced >= limit:
                return
            step_started = clock()
            room = min(draft_len, limit - produced - 1, n_ctx - llm.n_tokens - 1)
            draft = (
                find_draft(history[:size], max_ngram=max_ngram, max_draft=room) if room > 0 else history[:0]
            )
            batch = [token, *draft.tolist()]
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            decode_started = clock()
            llm._ctx.decode(llm._batch)
            stats.add_decode(len(batch), clock() - decode_started)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens = n_past + len(batch)
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(len(batch), n_vocab))
            best = rows.argmax(axis=1)
            accepted = 0
            while accepted < len(draft) and best[accepted] == draft[accepted]:
                accepted += 1
            if accepted < len(draft):  # drop the KV of the rejected guesses
                llm.n_tokens = n_past + 1 + accepted
                llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
                draft_len = max(1, accepted + 1)
            elif len(draft):
                draft_len = min(max_draft, draft_len + 1)
            stats.steps += 1
            stats.drafted += len(draft)
            stats.accepted += accepted
            stats.step_s += clock() - step_started
            for i in range(accepted):
                token = int(draft[i])
                yield token
                produced += 1
                history[size] = token
                size += 1
                if produced >= limit:
                    return
            token = int(best[accepted])
    finally:
        # The logits llama.cpp holds now belong to a batch, not to the last recorded token: make the
        # next ``generate`` decode before it samples (attribute of llama-cpp-python ≥ 0.3.10).
        _mark_needs_eval(llm)


def _mark_needs_eval(llm: Any) -> None:
    if hasattr(llm, "_requires_eval"):
        llm._requires_eval = True
