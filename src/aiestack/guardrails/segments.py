"""Split retrieved text into the segments that the indirect-injection head judges one at a time.

An instruction planted in a document is one sentence or line among many ordinary ones: scored as a
whole, the document's own text drowns it. So a chunk is cut into lines and sentences (code lines and
table rows stay lines), long pieces into windows of at most ``MAX_SEGMENT`` characters, and the
chunk's score is the highest score of its segments. Segments shorter than ``MIN_SEGMENT`` characters
(list bullets, table cells, lone brackets) carry no instruction and are skipped.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MIN_SEGMENT = 16
MAX_SEGMENT = 300
#: At most this many segments of one text are scored: a chunk's size is bounded by the chunker, and
#: this bounds the work for a text that is not (about 60 KB of prose).
MAX_SEGMENTS = 200

_LINE = re.compile(r"[^\n]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9¿¡])")
_SPACE = re.compile(r"\s+")


class Segment(NamedTuple):
    start: int
    end: int
    text: str


def _sentences(line: str, offset: int) -> list[tuple[int, int]]:
    spans, begin = [], 0
    for m in _SENTENCE_END.finditer(line):
        spans.append((offset + begin, offset + m.start()))
        begin = m.end()
    spans.append((offset + begin, offset + len(line)))
    return spans


def segments(text: str, *, min_chars: int = MIN_SEGMENT) -> list[Segment]:
    """The lines and sentences of ``text`` worth scoring, in order, with their spans in ``text``.

    ``min_chars``: shorter pieces are skipped (for injection, list bullets and table cells; a
    toxicity check lowers it, since an insult can be two words).
    """
    out: list[Segment] = []
    for line in _LINE.finditer(text):
        if len(line.group().strip()) < min_chars:
            continue
        for start, end in _sentences(line.group(), line.start()):
            while end - start > MAX_SEGMENT:
                cut = text.rfind(" ", start + MAX_SEGMENT // 2, start + MAX_SEGMENT)
                cut = cut if cut > start else start + MAX_SEGMENT
                out.append(Segment(start, cut, _SPACE.sub(" ", text[start:cut]).strip()))
                start = cut
            piece = _SPACE.sub(" ", text[start:end]).strip()
            if len(piece) >= min_chars:
                out.append(Segment(start, end, piece))
            if len(out) >= MAX_SEGMENTS:
                return out[:MAX_SEGMENTS]
    return out


def segment_features_text(segment: str) -> str:
    """The text the head's n-grams are taken from: a start marker, so "write …" at the start of a
    sentence (the imperative an instruction opens with) is a feature of its own."""
    return f"xxs {segment}"
