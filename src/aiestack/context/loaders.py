"""Loaders: turn the bytes of a file (or a fetched URL) into text documents ready for chunking.

Each loader returns :class:`Loaded` values: the text, a title, the kind of text (which picks the
chunker in ``auto`` mode), metadata, and for PDFs the offset where each page starts (so chunks can
carry their page number). A JSON or JSON-lines file of records yields one :class:`Loaded` per record,
its source being ``path#id``.

- ``.md``/``.markdown``: markdown (the title is the first ``#`` heading).
- ``.txt`` (and other plain text such as ``.rst``, ``.csv``, ``.yaml``): text.
- ``.html``/``.htm``: scripts, styles and navigation chrome dropped; headings kept as markdown
  headings so the markdown chunker gives chunks their heading path.
- ``.pdf``: the text of each page (pypdf), pages separated by a blank line.
- ``.json``/``.jsonl``: records; ``text_field`` holds the text, ``id_field`` the id, ``title_field``
  the title (prepended to the text, as BEIR evaluations do), every other field is metadata.
  BEIR's ``corpus.jsonl`` (``_id``, ``title``, ``text``) loads with the defaults.
- source code (``.py``, ``.js``, ``.ts``, ``.go``, ``.rs``, ``.java``, ``.c``, ...): code, with its
  language in the metadata.

A file that cannot be read raises :class:`LoadError` with the reason; ingestion reports it and goes on.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiestack.errors import InvalidRequest

Kind = Literal["text", "markdown", "html", "pdf", "code", "records"]

#: File extensions of source code, and the language each one is.
CODE_LANGUAGES: Mapping[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".swift": "swift",
    ".sh": "shell",
    ".bash": "shell",
    ".sql": "sql",
    ".lua": "lua",
    ".r": "r",
}
_TEXT_EXTENSIONS = frozenset(
    {".txt", ".text", ".rst", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".log"}
)
_MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdx"})
_HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
_RECORD_EXTENSIONS = frozenset({".json", ".jsonl", ".ndjson"})

#: Every extension a loader exists for (directories are searched for these).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {
        *CODE_LANGUAGES,
        *_TEXT_EXTENSIONS,
        *_MARKDOWN_EXTENSIONS,
        *_HTML_EXTENSIONS,
        *_RECORD_EXTENSIONS,
        ".pdf",
    }
)


class LoadError(InvalidRequest):
    """A file could not be turned into text; ``message`` says why."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """One document's text as a loader produced it."""

    source: str
    text: str
    title: str
    kind: Kind
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pages: tuple[int, ...] = ()  # PDFs: the offset in ``text`` where each page starts

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding ``offset`` (None when the document has no pages)."""
        if not self.pages:
            return None
        page = 1
        for i, start in enumerate(self.pages):
            if start <= offset:
                page = i + 1
            else:
                break
        return page


@dataclass(frozen=True, slots=True)
class RecordFields:
    """Which fields of a JSON record hold its text, id and title (None: guess ``_id`` then ``id``)."""

    text: str = "text"
    id: str | None = None
    title: str | None = "title"


def kind_of(name: str) -> Kind | None:
    """The loader kind for a file name or URL path (by extension), or None when unsupported."""
    suffix = Path(name).suffix.lower()
    if suffix in _MARKDOWN_EXTENSIONS:
        return "markdown"
    if suffix in _HTML_EXTENSIONS:
        return "html"
    if suffix == ".pdf":
        return "pdf"
    if suffix in _RECORD_EXTENSIONS:
        return "records"
    if suffix in CODE_LANGUAGES:
        return "code"
    if suffix in _TEXT_EXTENSIONS:
        return "text"
    return None


def load_path(path: Path, *, fields: RecordFields | None = None, source: str | None = None) -> list[Loaded]:
    """Load one file; raises :class:`LoadError` when its type is unknown or it cannot be parsed."""
    kind = kind_of(path.name)
    if kind is None:
        raise LoadError(
            f"{path}: no loader for '{path.suffix or path.name}' files.",
            hint=f"Supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))}.",
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    return load_bytes(data, source=source or str(path), kind=kind, name=path.name, fields=fields)


def load_bytes(
    data: bytes, *, source: str, kind: Kind, name: str = "", fields: RecordFields | None = None
) -> list[Loaded]:
    """Turn ``data`` into documents of ``kind``; ``name`` (a file name) gives titles and languages."""
    stem = Path(name or source).stem or source
    if kind == "pdf":
        return [_load_pdf(data, source, stem)]
    text = _decode(data, source)
    if kind == "records":
        return list(_load_records(text, source, name, fields or RecordFields()))
    if kind == "html":
        body, title = html_to_markdown(text)
        return [Loaded(source, body, title or stem, "markdown", {"format": "html"})]
    if kind == "markdown":
        return [Loaded(source, text, _markdown_title(text) or stem, "markdown")]
    if kind == "code":
        language = CODE_LANGUAGES.get(Path(name or source).suffix.lower(), "")
        return [Loaded(source, text, Path(name or source).name, "code", {"language": language})]
    return [Loaded(source, text, stem, "text")]


# --------------------------------------------------------------------------- per format


def _decode(data: bytes, source: str) -> str:
    if b"\x00" in data[:8192]:
        raise LoadError(f"{source}: looks binary (it holds NUL bytes), not text.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"{source}: is not UTF-8 text (invalid byte at offset {exc.start}).",
            hint="Convert it to UTF-8 (e.g. iconv -t UTF-8) and ingest it again.",
        ) from None


_ATX_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _markdown_title(text: str) -> str:
    match = _ATX_HEADING.search(text)
    return match.group(2).strip() if match else ""


def _load_pdf(data: bytes, source: str, stem: str) -> Loaded:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise LoadError(
                f"{source}: the PDF is encrypted.", hint="Decrypt it first (e.g. qpdf --decrypt)."
            )
        texts = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata
        title = str(info.get("/Title") or "").strip() if info else ""
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"{source}: not a readable PDF ({exc}).") from None
    if not any(texts):
        raise LoadError(
            f"{source}: the PDF has no extractable text (a scanned image?).", hint="Run OCR on it first."
        )
    pages: list[int] = []
    parts: list[str] = []
    offset = 0
    for text in texts:
        pages.append(offset)
        parts.append(text)
        offset += len(text) + 2
    return Loaded(source, "\n\n".join(parts), title or stem, "text", {"pages": len(texts)}, tuple(pages))


def _load_records(text: str, source: str, name: str, fields: RecordFields) -> Iterable[Loaded]:
    records = list(_parse_records(text, source, name))
    seen: set[str] = set()
    for n, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise LoadError(f"{source}: record {n} is not a JSON object.")
        body = record.get(fields.text)
        if not isinstance(body, str):
            raise LoadError(
                f"{source}: record {n} has no text field '{fields.text}' (fields: {', '.join(map(str, record)) or 'none'}).",
                hint="Name the text field with --text-field.",
            )
        id_key = fields.id or ("_id" if "_id" in record else "id" if "id" in record else None)
        record_id = str(record[id_key]) if id_key and record.get(id_key) is not None else str(n)
        if fields.id and fields.id not in record:
            raise LoadError(
                f"{source}: record {n} has no id field '{fields.id}'.", hint="Name it with --id-field."
            )
        if record_id in seen:
            raise LoadError(
                f"{source}: the id '{record_id}' appears twice.", hint="Ids must be unique within a file."
            )
        seen.add(record_id)
        title = record.get(fields.title) if fields.title else None
        title = title.strip() if isinstance(title, str) else ""
        used = {fields.text, id_key, fields.title}
        metadata = {k: v for k, v in record.items() if k not in used}
        metadata["record_id"] = record_id
        full = f"{title}\n\n{body}" if title and body else (body or title)
        yield Loaded(f"{source}#{record_id}", full, title or record_id, "text", metadata)


def _parse_records(text: str, source: str, name: str) -> list[Any]:
    stripped = text.lstrip()
    if Path(name or source).suffix.lower() == ".json" or stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadError(f"{source}: invalid JSON at line {exc.lineno} ({exc.msg}).") from None
        return data if isinstance(data, list) else [data]
    out: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise LoadError(f"{source}: invalid JSON on line {lineno} ({exc.msg}).") from None
    return out


# --------------------------------------------------------------------------- HTML

_DROP_TAGS = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "head",
    "nav",
    "footer",
    "form",
)
_BLOCK_TAGS = (
    "p", "div", "section", "article", "main", "header", "aside", "li", "ul", "ol", "tr", "table",
    "blockquote", "pre", "dl", "dt", "dd", "figure", "figcaption", "br", "hr",
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def html_to_markdown(html: str) -> tuple[str, str]:
    """The readable text of an HTML page with its headings as markdown headings, and its title."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            heading = _SPACES.sub(" ", tag.get_text(" ", strip=True))
            tag.replace_with(NavigableString(f"\n\n{'#' * level} {heading}\n\n" if heading else "\n\n"))
    for tag in soup.find_all("li"):
        tag.insert(0, NavigableString("- "))
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before(NavigableString("\n\n" if tag.name != "li" else "\n"))
        tag.insert_after(NavigableString("\n\n" if tag.name != "li" else "\n"))
    text = soup.get_text("")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    body = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
    if not title:
        title = _markdown_title(body)
    return body, title
