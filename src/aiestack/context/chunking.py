"""Chunking: split a document's text into pieces an embedding model can take whole.

Sizes count tokens of a :class:`Tokenizer`: the embedding model's own tokenizer when it has one
(:func:`tokenizer_for`), else a regex of words and punctuation. Four chunkers:

- :class:`TokenChunker`: fixed windows of ``size`` tokens, ``overlap`` tokens shared by neighbours.
- :class:`RecursiveChunker`: paragraphs packed up to ``size``; a paragraph too long is split into
  sentences, a sentence too long into words (code: blank lines, then lines, then words).
- :class:`MarkdownChunker`: one section per heading, each chunk carrying its heading path
  (``Install > From source``); long sections are split recursively.
- :class:`CodeChunker`: Python by top-level function and class (with decorators, docstrings and the
  comments right above), a long class by method; other languages fall back to the recursive chunker.

A chunker returns :class:`Piece` values whose text is exactly ``text[start:end]``, so a chunk can
always be located in its document (citations show the span). :func:`make_chunks` turns pieces into
:class:`~aiestack.types.Chunk` values whose id hashes the document id, the position and the text.
"""

from __future__ import annotations

import ast
import bisect
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from aiestack.types import Chunk, Document

ChunkerName = Literal["auto", "recursive", "tokens", "markdown", "code"]
CHUNKERS: tuple[ChunkerName, ...] = ("auto", "recursive", "tokens", "markdown", "code")
DEFAULT_SIZE = 200
DEFAULT_OVERLAP = 32


# --------------------------------------------------------------------------- tokenizers


class Tokenizer(Protocol):
    name: str

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The character span of every token of ``text``, in order."""
        ...

    def count(self, text: str) -> int: ...


class RegexTokenizer:
    """Words and single punctuation marks: a fair stand-in when the model's tokenizer is unknown."""

    name = "regex"
    _TOKEN = re.compile(r"\w+|[^\w\s]")

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in self._TOKEN.finditer(text))


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (the fast ``tokenizers`` library), without special tokens."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _Tok

        self._tok = _Tok.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.name = f"hf:{path.parent.name}"

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(o) for o in self._tok.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


def tokenizer_for(embeddings: object) -> Tokenizer:
    """The embedding model's tokenizer when its files are local (sentence-transformers), else the regex one.

    Wrappers (the embedding cache) are looked through via their ``inner`` model.
    """
    for _ in range(8):
        if getattr(embeddings, "path", None) is not None or getattr(embeddings, "inner", None) is None:
            break
        embeddings = embeddings.inner  # type: ignore[attr-defined]
    path = getattr(embeddings, "path", None)
    if isinstance(path, Path) and (path / "tokenizer.json").is_file():
        try:
            return HFTokenizer(path / "tokenizer.json")
        except Exception:  # an unreadable or unsupported tokenizer file: counting still works
            return RegexTokenizer()
    return RegexTokenizer()


# --------------------------------------------------------------------------- pieces and chunkers


@dataclass(frozen=True, slots=True)
class Piece:
    """A span of a document's text chosen as one chunk, with what the chunker knows about it."""

    start: int
    end: int
    text: str
    headings: tuple[str, ...] = ()
    symbol: str = ""  # code: the qualified name of the function or class


class Chunker(Protocol):
    def split(self, text: str) -> list[Piece]: ...


def _check(size: int, overlap: int = 0) -> None:
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 token, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and chunk size - 1 ({size - 1}), got {overlap}")


def _piece(text: str, start: int, end: int, **extra: Any) -> Piece | None:
    """The span with surrounding whitespace trimmed, or None if nothing but whitespace is left."""
    segment = text[start:end]
    stripped = segment.strip()
    if not stripped:
        return None
    lead = len(segment) - len(segment.lstrip())
    return Piece(start + lead, start + lead + len(stripped), stripped, **extra)


class TokenChunker:
    """Windows of ``size`` tokens; consecutive windows share ``overlap`` tokens."""

    def __init__(
        self, tokenizer: Tokenizer, size: int = DEFAULT_SIZE, overlap: int = DEFAULT_OVERLAP
    ) -> None:
        _check(size, overlap)
        self.tokenizer, self.size, self.overlap = tokenizer, size, overlap

    def split(self, text: str) -> list[Piece]:
        spans = self.tokenizer.spans(text)
        out: list[Piece] = []
        step = self.size - self.overlap
        for i in range(0, len(spans), step):
            window = spans[i : i + self.size]
            piece = _piece(text, window[0][0], window[-1][1])
            if piece:
                out.append(piece)
            if i + self.size >= len(spans):
                break
        return out


_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_LINE = re.compile(r"\n")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_WORD = re.compile(r"\s+")
PROSE_LEVELS: tuple[re.Pattern[str], ...] = (_PARAGRAPH, _SENTENCE, _WORD)
CODE_LEVELS: tuple[re.Pattern[str], ...] = (_BLANK_LINES, _LINE, _WORD)


def _units(text: str, start: int, end: int, sep: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of ``text[start:end]`` between matches of ``sep`` (separators left out)."""
    out: list[tuple[int, int]] = []
    pos = start
    for m in sep.finditer(text, start, end):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = max(pos, m.end())
    if pos < end:
        out.append((pos, end))
    return out


class RecursiveChunker:
    """Pack paragraphs up to ``size`` tokens, splitting what is too long by sentence, then by word."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        size: int = DEFAULT_SIZE,
        *,
        levels: Sequence[re.Pattern[str]] = PROSE_LEVELS,
    ) -> None:
        _check(size)
        self.tokenizer, self.size, self.levels = tokenizer, size, tuple(levels)

    def split(self, text: str) -> list[Piece]:
        return self.split_span(text, 0, len(text))

    def split_span(
        self, text: str, start: int, end: int, *, counter: TokenCounter | None = None, **extra: Any
    ) -> list[Piece]:
        """Pieces of ``text[start:end]`` (offsets stay relative to the whole ``text``).

        Pass the ``counter`` of ``text`` when splitting several spans of one text: it is built once.
        """
        counter = counter or TokenCounter(self.tokenizer, text)
        spans = self._split(text, start, end, 0, counter)
        return [p for s, e in spans if (p := _piece(text, s, e, **extra))]

    def _split(
        self, text: str, start: int, end: int, level: int, count: TokenCounter
    ) -> list[tuple[int, int]]:
        if count(start, end) <= self.size:
            return [(start, end)]
        if level >= len(self.levels):  # one "word" longer than the size (a URL, a blob): token windows
            tokens = count.spans_in(start, end)
            return [
                (tokens[i][0], tokens[min(i + self.size, len(tokens)) - 1][1])
                for i in range(0, len(tokens), self.size)
            ]
        out: list[tuple[int, int]] = []
        cur: tuple[int, int] | None = None
        cur_tokens = 0
        for s, e in _units(text, start, end, self.levels[level]):
            n = count(s, e)
            if n > self.size:
                if cur:
                    out.append(cur)
                    cur, cur_tokens = None, 0
                out.extend(self._split(text, s, e, level + 1, count))
            elif cur is not None and cur_tokens + n <= self.size:
                cur, cur_tokens = (cur[0], e), cur_tokens + n
            else:
                if cur:
                    out.append(cur)
                cur, cur_tokens = (s, e), n
        if cur:
            out.append(cur)
        return out


class TokenCounter:
    """Token counts of any span of one text from a single tokenisation (a binary search on the offsets).

    Counting each paragraph, sentence and word separately would tokenise the text many times over;
    this tokenises it once. A span counts the tokens that lie wholly inside it.
    """

    def __init__(self, tokenizer: Tokenizer, text: str) -> None:
        self._spans = tokenizer.spans(text)
        self._starts = [s for s, _ in self._spans]
        self._ends = [e for _, e in self._spans]

    def __call__(self, start: int, end: int) -> int:
        return max(0, bisect.bisect_right(self._ends, end) - bisect.bisect_left(self._starts, start))

    def spans_in(self, start: int, end: int) -> list[tuple[int, int]]:
        return self._spans[bisect.bisect_left(self._starts, start) : bisect.bisect_right(self._ends, end)]


_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")


def markdown_sections(text: str) -> list[tuple[tuple[str, ...], int, int]]:
    """(heading path, start, end) of each section; a section starts at its heading line."""
    sections: list[tuple[tuple[str, ...], int, int]] = []
    path: list[tuple[int, str]] = []
    start, current = 0, cast(tuple[str, ...], ())
    fenced = False
    pos = 0
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line.rstrip("\r\n"))):
            if pos > start:
                sections.append((current, start, pos))
            level = len(m.group(1))
            path = [(lv, h) for lv, h in path if lv < level] + [(level, m.group(2).strip())]
            start, current = pos, tuple(h for _, h in path)
        pos += len(line)
    if pos > start:
        sections.append((current, start, pos))
    return sections


class MarkdownChunker:
    """One chunk per heading section (split recursively when long), carrying the heading path."""

    def __init__(self, tokenizer: Tokenizer, size: int = DEFAULT_SIZE) -> None:
        self.inner = RecursiveChunker(tokenizer, size)

    def split(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        counter = TokenCounter(self.inner.tokenizer, text)
        pending: tuple[int, tuple[str, ...]] | None = None  # a heading-only section, kept for the next one
        for headings, start, end in markdown_sections(text):
            section = text[start:end]
            body = (
                section.split("\n", 1)[1] if headings and "\n" in section else ("" if headings else section)
            )
            if pending is not None:
                start, pending = pending[0], None
            if headings and not body.strip():
                pending = (start, headings)
                continue
            out.extend(self.inner.split_span(text, start, end, counter=counter, headings=headings))
        if pending is not None:
            out.extend(
                self.inner.split_span(text, pending[0], len(text), counter=counter, headings=pending[1])
            )
        return out


class CodeChunker:
    """Python by top-level function and class (a long class by method); other code recursively by blocks."""

    def __init__(self, tokenizer: Tokenizer, size: int = DEFAULT_SIZE, *, language: str = "python") -> None:
        self.language = language
        self.tokenizer, self.size = tokenizer, size
        self.inner = RecursiveChunker(tokenizer, size, levels=CODE_LEVELS)

    def split(self, text: str) -> list[Piece]:
        if self.language != "python":
            return self.inner.split(text)
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return self.inner.split(text)
        lines = _line_starts(text)
        count = TokenCounter(self.tokenizer, text)
        out: list[Piece] = []
        gap_start = 0
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            start, end = _node_span(node, text, lines)
            out.extend(self.inner.split_span(text, gap_start, start, counter=count, symbol="<module>"))
            out.extend(self._definition(node, text, lines, start, end, count))
            gap_start = end
        out.extend(self.inner.split_span(text, gap_start, len(text), counter=count, symbol="<module>"))
        return sorted(out, key=lambda p: p.start)

    def _definition(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
        text: str,
        lines: list[int],
        start: int,
        end: int,
        count: TokenCounter,
    ) -> list[Piece]:
        if count(start, end) <= self.size or not isinstance(node, ast.ClassDef):
            return self.inner.split_span(text, start, end, counter=count, symbol=node.name)
        out: list[Piece] = []
        head_start = start
        for child in node.body:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                c_start, c_end = _node_span(child, text, lines)
                out.extend(self.inner.split_span(text, head_start, c_start, counter=count, symbol=node.name))
                out.extend(
                    self.inner.split_span(
                        text, c_start, c_end, counter=count, symbol=f"{node.name}.{child.name}"
                    )
                )
                head_start = c_end
        out.extend(self.inner.split_span(text, head_start, end, counter=count, symbol=node.name))
        return out


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    return starts


def _node_span(node: ast.stmt, text: str, lines: list[int]) -> tuple[int, int]:
    """From the first decorator (and the comments right above it) to the end of the node's last line."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    while first > 1 and text[lines[first - 2] : lines[first - 1]].lstrip().startswith("#"):
        first -= 1
    last = node.end_lineno or node.lineno
    end = lines[last] if last < len(lines) else len(text)
    return lines[first - 1], end


def resolve_chunker(name: ChunkerName, kind: str) -> ChunkerName:
    """``auto`` resolved for a loader kind: markdown for markdown and HTML, code for code, else recursive."""
    if name != "auto":
        return name
    return "markdown" if kind == "markdown" else "code" if kind == "code" else "recursive"


def make_chunker(
    name: ChunkerName,
    *,
    kind: str,
    tokenizer: Tokenizer,
    size: int = DEFAULT_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    language: str = "",
) -> Chunker:
    """The chunker ``name`` (``auto``: markdown for markdown and HTML, code for code, else recursive)."""
    name = resolve_chunker(name, kind)
    factories: Mapping[str, Callable[[], Chunker]] = {
        "tokens": lambda: TokenChunker(tokenizer, size, overlap),
        "recursive": lambda: RecursiveChunker(tokenizer, size),
        "markdown": lambda: MarkdownChunker(tokenizer, size),
        "code": lambda: CodeChunker(tokenizer, size, language=language or "python"),
    }
    if name not in factories:
        raise ValueError(f"unknown chunker {name!r}; use one of {', '.join(CHUNKERS)}")
    return factories[name]()


def chunk_id(document_id: str, position: int, text: str) -> str:
    """A chunk's id: the hash of its document's id, its position and its text."""
    digest = hashlib.sha256(f"{document_id}\x00{position}\x00{text}".encode()).hexdigest()
    return f"ch_{digest[:32]}"


def make_chunks(
    document: Document,
    pieces: Sequence[Piece],
    *,
    page_at: Callable[[int], int | None] | None = None,
) -> list[Chunk]:
    """Chunks of ``document`` from ``pieces``, with source, title, position, span, page and headings."""
    chunks: list[Chunk] = []
    for position, piece in enumerate(pieces):
        meta: dict[str, Any] = dict(document.metadata)
        meta.update(
            source=document.source, title=document.title, position=position, start=piece.start, end=piece.end
        )
        if piece.headings:
            meta["heading_path"] = " > ".join(piece.headings)
        if piece.symbol:
            meta["symbol"] = piece.symbol
        page = page_at(piece.start) if page_at else None
        if page is not None:
            meta["page"] = page
        chunks.append(
            Chunk(chunk_id(document.id, position, piece.text), document.id, piece.text, position, meta)
        )
    return chunks
