"""The extractive fallback of a RAG answer: when the model's answer is not usable, quote the sources.

A small base model (the embedded Gemma 3 270M) given a question and numbered sources often returns
nothing, repeats the prompt's example, lists source numbers or loops on one phrase. An answer is
*usable* when it has content words, no run of four words recurs three times, and most of its words
(``min_support``) occur in the question or the sources; a wrong but
well-worded answer passes this check (it is a floor, not a fact check: the grounding guard scores
that). When the answer is not usable, the best sentences of the sources — those sharing the most
question words, shortest first, earlier sources first — are added below it with their citations,
under a label that says the text is quoted, not generated::

    Extractive answer (quoted from the sources; the model gave no usable answer):
    aiestack keys revoke KEY_ID [2]

For a stream, the model's deltas pass through as they come and the extractive part follows as one
more delta before the final one, so streaming clients see the same text as the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence

from aiestack.context.contextual import display_text
from aiestack.streams import Accumulator
from aiestack.types import Completion, Delta, Hit

LABEL = "Extractive answer (quoted from the sources; the model gave no usable answer):"
#: Exchange attribute set when the fallback was used.
RAG_EXTRACTIVE = "aiestack.rag.extractive"

_WORD = re.compile(r"[a-z][a-z0-9]+")
_CITATION = re.compile(r"\[\d+\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])")
_STOP = frozenset(
    ["the", "and", "for", "are", "but", "not", "you", "your", "with", "this", "that", "from", "have", "has", "had", "was", "were", "will", "would", "can", "could", "should", "how", "what", "when", "where", "which", "who", "why", "does", "did", "doing", "done", "into", "onto", "about", "than", "then", "them", "they", "there", "their", "its", "it's", "our", "out", "use", "using", "used", "get", "set", "make", "one", "all", "any", "each", "more", "most", "some", "such", "only", "also", "just", "like", "need", "want", "know", "please", "tell", "answer", "question", "sources", "source"]
)


def content_words(text: str) -> set[str]:
    """Lower-case words of three letters or more that carry meaning, lightly stemmed (``keys`` → ``key``)."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP}


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def usable(answer: str, question: str, hits: Sequence[Hit], *, min_support: float = 0.6) -> bool:
    """Whether ``answer`` has content words, does not loop, and at least ``min_support`` of its words occur in the question or sources."""
    words = content_words(_CITATION.sub(" ", answer))
    if not words or _loops(answer):
        return False
    known = content_words(question)
    for hit in hits:
        known |= content_words(display_text(hit.chunk))
    return len(words & known) / len(words) >= min_support


def _loops(text: str, *, n: int = 4, times: int = 3) -> bool:
    """Whether some run of ``n`` words occurs ``times`` times or more (a small model caught in a loop)."""
    tokens = text.lower().split()
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = _CITATION.sub("", line).strip(" \t#>*-|`")
        if not line or line.startswith("```"):
            continue
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def focus(text: str, question: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars``: its sentences that share words with ``question`` (the most first,
    earlier first on ties), kept in their order, gaps marked ``…``; the head of the text when none does."""
    if len(text) <= max_chars:
        return text
    wanted = content_words(question)
    sentences = _sentences(text)
    overlap = [len(wanted & content_words(s)) for s in sentences]
    ranked = sorted((i for i in range(len(sentences)) if overlap[i]), key=lambda i: (-overlap[i], i))
    if not ranked:
        return text[:max_chars].rstrip() + " …"
    kept: list[int] = []
    used = 0
    for i in ranked:
        if used + len(sentences[i]) + 3 > max_chars:
            continue
        kept.append(i)
        used += len(sentences[i]) + 3
    if not kept:
        return sentences[ranked[0]][:max_chars].rstrip() + " …"
    kept.sort()
    out = [sentences[kept[0]]]
    for before, i in itertools.pairwise(kept):
        out.append(("… " if i > before + 1 else "") + sentences[i])
    return " ".join(out) + (" …" if kept[-1] < len(sentences) - 1 else "")


def extractive_answer(question: str, hits: Sequence[Hit], *, sentences: int = 2, max_chars: int = 300) -> str:
    """The best ``sentences`` sentences of ``hits`` for ``question``, each with its ``[n]``; ``""`` if none shares a word."""
    wanted = content_words(question)
    scored: list[tuple[int, int, int, int, str]] = []  # (-overlap, length, source n, position, sentence)
    for n, hit in enumerate(hits, start=1):
        for pos, sentence in enumerate(_sentences(display_text(hit.chunk))):
            overlap = len(wanted & content_words(sentence))
            if overlap and len(sentence) <= max_chars:
                scored.append((-overlap, len(sentence), n, pos, sentence))
    scored.sort()
    picked: list[str] = []
    for _, _, n, _, sentence in scored:
        line = f"{sentence.rstrip()} [{n}]"
        if line not in picked:
            picked.append(line)
        if len(picked) == sentences:
            break
    return "\n".join(picked)


def with_fallback(completion: Completion, question: str, hits: Sequence[Hit]) -> tuple[Completion, bool | None]:
    """``completion`` with the extractive answer added when its answer is not usable.

    Returns the completion and whether the fallback was used (``None`` for a stream: that is known
    only when it ends).
    """
    if not hits:
        return completion, False
    if completion.stream is None:
        extra = _extra(completion.text, question, hits)
        if not extra:
            return completion, False
        message = dataclasses.replace(completion.message, content=_join(completion.text, extra))
        return dataclasses.replace(completion, message=message), True
    source = completion.stream

    async def wrapped() -> AsyncIterator[Delta]:
        acc = Accumulator(completion)
        async for delta in source:
            acc.add(delta)
            if delta.finish_reason is None:
                yield delta
                continue
            extra = _extra(acc.text, question, hits)
            if extra:
                yield Delta(text=_join(acc.text, extra)[len(acc.text) :])
            yield delta

    return dataclasses.replace(completion, stream=wrapped()), None


def _extra(answer: str, question: str, hits: Sequence[Hit]) -> str:
    if usable(answer, question, hits):
        return ""
    quoted = extractive_answer(question, hits)
    return f"{LABEL}\n{quoted}" if quoted else ""


def _join(answer: str, extra: str) -> str:
    return f"{answer.rstrip()}\n\n{extra}" if answer.strip() else extra

