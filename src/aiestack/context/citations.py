"""Citations: the numbered sources a RAG answer was given, and which of them the answer cites.

Sources are numbered from 1 in the order of :attr:`Exchange.hits <aiestack.types.Exchange.hits>`,
the same numbering the prompt template shows the model. An answer cites source *n* with a marker
``[n]`` (``[1, 3]``, ``[1][3]`` and ``[1-3]`` work too). The server adds the citations to its
responses as a top-level ``citations`` list, which an unmodified OpenAI client simply ignores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiestack.context.contextual import display_text
from aiestack.types import Hit

_MARKER = re.compile(r"\[(\s*\d+\s*(?:(?:,|-|–)\s*\d+\s*)*)\]")
MAX_SPAN = 50  # a range like [1-50] is as wide as a marker may reach


@dataclass(frozen=True, slots=True)
class Citation:
    """Source ``index`` of an answer: which chunk, from where, how it scored, and its text span.

    ``start``/``end`` are the chunk's character offsets in its document's text when the chunker
    recorded them (``None`` otherwise); ``text`` is the chunk's own text (without a situating
    context that contextual retrieval prepended for indexing), as the prompt showed it.
    """

    index: int
    chunk_id: str
    document_id: str
    source: str
    title: str
    score: float
    retriever: str
    text: str
    start: int | None = None
    end: int | None = None
    heading: str | None = None
    page: int | None = None

    def to_json(self, *, cited: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "source": self.source,
            "title": self.title,
            "score": self.score,
            "retriever": self.retriever,
            "text": self.text,
            "start": self.start,
            "end": self.end,
        }
        if self.heading:
            out["heading"] = self.heading
        if self.page is not None:
            out["page"] = self.page
        if cited is not None:
            out["cited"] = cited
        return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def citations_for(hits: Sequence[Hit]) -> list[Citation]:
    """One citation per hit, numbered from 1 in order."""
    out = []
    for i, hit in enumerate(hits, start=1):
        meta = hit.chunk.metadata
        heading = meta.get("heading_path")
        out.append(
            Citation(
                index=i,
                chunk_id=hit.chunk.id,
                document_id=hit.chunk.document_id,
                source=str(meta.get("source") or ""),
                title=str(meta.get("title") or ""),
                score=float(hit.score),
                retriever=hit.retriever,
                text=display_text(hit.chunk),
                start=_int(meta.get("start")),
                end=_int(meta.get("end")),
                heading=str(heading) if heading else None,
                page=_int(meta.get("page")),
            )
        )
    return out


def cited_indices(answer: str, n: int) -> list[int]:
    """The source numbers (1..n) that ``answer`` cites, in order of first mention."""
    seen: dict[int, None] = {}
    for group in _MARKER.findall(answer):
        for part in group.split(","):
            bounds = re.split(r"\s*[-–]\s*", part.strip())
            try:
                lo, hi = int(bounds[0]), int(bounds[-1])
            except ValueError:
                continue
            if hi < lo or hi - lo > MAX_SPAN:
                hi = lo
            for i in range(lo, hi + 1):
                if 1 <= i <= n:
                    seen.setdefault(i, None)
    return list(seen)


def citations_json(hits: Sequence[Hit], answer: str | None = None) -> list[dict[str, Any]]:
    """The ``citations`` field of a response: every source, each marked ``cited`` when ``answer`` is given."""
    cites = citations_for(hits)
    if answer is None:
        return [c.to_json() for c in cites]
    used = set(cited_indices(answer, len(cites)))
    return [c.to_json(cited=c.index in used) for c in cites]
