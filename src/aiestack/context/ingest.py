"""Ingestion: files, globs, directories and URLs into a collection of a :class:`DocumentStore`.

:func:`ingest` is incremental and crash-safe:

- A document's id hashes its source, its text and the recipe that chunks it (chunker, size, overlap,
  tokenizer, contextual model). Re-ingesting an unchanged file finds the same id stored for its source
  and does nothing; a changed file (or a changed recipe) replaces the old document and its chunks.
- Each embedding batch of documents is written with one :meth:`DocumentStore.put_documents` (one
  transaction and one index update per batch), so a crash (or Ctrl-C) leaves every batch either
  fully written or untouched; running again finishes the job, skipping what was written.
- ``prune=True`` deletes documents whose file is gone (and records gone from a JSON file ingested now).
- A file that fails to load is reported with its reason and skipped; the others go on.

For throughput the work is a three-stage pipeline: loading and chunking (in a thread), embedding
(in batches of about ``batch_chunks`` chunks taken across documents, on the model's own worker), and
writing (in a thread) run at the same time, with small queues between them, so the embedding model
is never idle waiting for the disk (see ``bench/ingest.py`` for the figures).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiestack.context.chunking import (
    DEFAULT_OVERLAP,
    DEFAULT_SIZE,
    ChunkerName,
    Tokenizer,
    make_chunker,
    make_chunks,
    resolve_chunker,
    tokenizer_for,
)
from aiestack.context.contextual import Contextualizer, with_context
from aiestack.context.loaders import (
    SUPPORTED_EXTENSIONS,
    Loaded,
    LoadError,
    RecordFields,
    load_bytes,
    load_path,
)
from aiestack.context.urls import URLPolicy, fetch, kind_for_content_type
from aiestack.errors import AiestackError, InvalidRequest, PermissionDenied
from aiestack.models.base import EmbeddingModel
from aiestack.stores.documents import DocumentStore, StoredDocument
from aiestack.types import Chunk, Document

_SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".tox"}
)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How to load, chunk and embed. The defaults suit the packaged MiniLM (256-token inputs)."""

    chunker: ChunkerName = "auto"
    chunk_size: int = DEFAULT_SIZE
    overlap: int = DEFAULT_OVERLAP
    fields: RecordFields = field(default_factory=RecordFields)
    urls: URLPolicy = field(default_factory=URLPolicy)
    tenant: str = "default"
    prune: bool = False
    batch_chunks: int = 512  # bigger calls let the model sort more texts by length (less padding)
    contextualizer: Contextualizer | None = None
    tokenizer: Tokenizer | None = None  # default: the embedding model's (see tokenizer_for)


@dataclass(frozen=True, slots=True)
class Failure:
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class IngestReport:
    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    pruned: int = 0
    failed: tuple[Failure, ...] = ()
    chunks: int = 0  # chunks written by this run
    seconds: float = 0.0

    @property
    def documents(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass(frozen=True, slots=True)
class Progress:
    """``written`` of ``total`` documents are done (``total`` grows as files are loaded)."""

    written: int
    total: int
    source: str
    files_loaded: int
    files: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to load: a file path or a URL, with the source name documents will carry."""

    source: str
    path: Path | None = None


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def expand(patterns: Iterable[str]) -> tuple[list[Target], list[str]]:
    """The targets that files, directories (recursively), globs and URLs name, and the patterns matching nothing."""
    targets: dict[str, Target] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        if _is_url(pattern):
            targets.setdefault(pattern, Target(pattern))
            continue
        found: list[Path] = []
        for name in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)) or (
            [] if glob.has_magic(pattern) else [os.path.expanduser(pattern)]
        ):
            path = Path(name)
            if path.is_dir():
                found.extend(_walk(path))
            elif path.is_file():
                found.append(path)
        if not found:
            unmatched.append(pattern)
        for path in found:
            resolved = path.resolve()
            targets.setdefault(str(resolved), Target(str(resolved), resolved))
    return list(targets.values()), unmatched


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        out.extend(
            Path(dirpath, f)
            for f in sorted(filenames)
            if Path(f).suffix.lower() in SUPPORTED_EXTENSIONS and not f.startswith(".")
        )
    return out


def document_id(source: str, text: str, recipe: str) -> str:
    """The content hash that names a document: its source, its text and how it is chunked."""
    digest = hashlib.sha256(f"{source}\x00{recipe}\x00{text}".encode()).hexdigest()
    return f"doc_{digest[:32]}"


@dataclass(frozen=True, slots=True)
class _Prepared:
    document: Document
    chunks: list[Chunk]
    replaces: bool


@dataclass
class _Run:
    """The mutable tally of one ingest call (owned by that call only)."""

    existing: dict[str, StoredDocument]
    files: int
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    total: int = 0
    written: int = 0
    files_loaded: int = 0
    failed: list[Failure] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    loaded_files: set[str] = field(default_factory=set)


async def ingest(
    paths: Sequence[str],
    collection: str,
    store: DocumentStore,
    embeddings: EmbeddingModel,
    *,
    options: IngestOptions | None = None,
    progress: ProgressCallback | None = None,
    models: Callable[[str], EmbeddingModel] | None = None,
) -> IngestReport:
    """Load, chunk, embed and store what ``paths`` name (files, directories, globs, URLs) into ``collection``.

    ``collection`` is resolved through the store's pointers (documents go into its current
    version); with ``models`` (:meth:`aiestack.resources.Resources.embeddings_for`), an existing
    collection is embedded by the model it records, not ``embeddings``.
    The collection is created (for ``options.tenant`` and the embedding model) if missing. Raises
    :class:`InvalidRequest` when nothing matches, :class:`PermissionDenied` when the collection
    belongs to another tenant; a file that fails to load is reported in the result instead.
    """
    opts = options or IngestOptions()
    started = time.perf_counter()
    targets, unmatched = expand(paths)
    if not targets:
        raise InvalidRequest(
            f"Nothing matched {', '.join(repr(p) for p in paths) or 'the (empty) list of paths'}.",
            hint="Give existing files, directories or globs (quote globs so the shell leaves them to aiestack).",
        )
    collection = await asyncio.to_thread(store.resolve, collection)
    if models is not None:
        info = await asyncio.to_thread(store.get_collection, collection)
        if info is not None:
            embeddings = models(info.embedding_model)
    dim = embeddings.dim or len((await embeddings.embed(["dimension probe"]))[0])
    await asyncio.to_thread(_ensure_collection, store, collection, embeddings.name, dim, opts.tenant)
    existing = await asyncio.to_thread(store.documents, collection)
    run = _Run({d.source: d for d in existing}, files=len(targets))
    run.failed.extend(Failure(p, "nothing matched") for p in unmatched)
    tokenizer = opts.tokenizer or tokenizer_for(embeddings)

    to_embed: asyncio.Queue[list[_Prepared] | None] = asyncio.Queue(maxsize=2)
    to_write: asyncio.Queue[tuple[list[_Prepared], list[list[float]]] | None] = asyncio.Queue(maxsize=2)

    async def produce() -> None:
        batch: list[_Prepared] = []
        size = 0
        for target in targets:
            async for item in _prepare(target, run, opts, tokenizer, progress):
                batch.append(item)
                size += len(item.chunks)
                if size >= opts.batch_chunks:
                    await to_embed.put(batch)
                    batch, size = [], 0
        if batch:
            await to_embed.put(batch)
        await to_embed.put(None)

    async def embed() -> None:
        while (batch := await to_embed.get()) is not None:
            texts = [c.text for item in batch for c in item.chunks]
            vectors = await embeddings.embed(texts) if texts else []
            if len(vectors) != len(texts):
                raise AiestackError(
                    f"The embedding model returned {len(vectors)} vectors for {len(texts)} texts."
                )
            await to_write.put((batch, vectors))
        await to_write.put(None)

    async def write() -> None:
        while (item := await to_write.get()) is not None:
            batch, vectors = item
            # A batch being written is let finish even when the run is cancelled (Ctrl-C, an error in
            # another stage): each document is atomic anyway, and nothing writes after ingest returns.
            job = asyncio.ensure_future(asyncio.to_thread(_write_batch, store, collection, batch, vectors))
            try:
                results = await asyncio.shield(job)
            except asyncio.CancelledError:
                await job
                raise
            for prepared, stored in zip(batch, results, strict=True):
                _tally(run, prepared, stored)
                if progress:
                    progress(
                        Progress(
                            run.written, run.total, prepared.document.source, run.files_loaded, run.files
                        )
                    )

    # A large first load lets the store build its vector index once, after the writes.
    bulk = store.bulk_load(collection, len(targets))
    await asyncio.to_thread(bulk.__enter__)
    tasks = [asyncio.create_task(fn()) for fn in (produce, embed, write)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.shield(asyncio.to_thread(bulk.__exit__, None, None, None))
    pruned = await asyncio.to_thread(_prune, store, collection, run) if opts.prune else 0
    return IngestReport(
        collection=collection,
        added=run.added,
        updated=run.updated,
        unchanged=run.unchanged,
        pruned=pruned,
        failed=tuple(run.failed),
        chunks=run.chunks,
        seconds=time.perf_counter() - started,
    )


def _ensure_collection(store: DocumentStore, name: str, model: str, dim: int, tenant: str) -> None:
    info = store.get_collection(name)
    if info is not None and info.tenant != tenant:
        raise PermissionDenied(
            f"The collection '{name}' belongs to another tenant than '{tenant}'.",
            hint="Use your tenant's collection, or choose another collection name.",
        )
    store.create_collection(name, tenant=tenant, embedding_model=model, dim=dim)


def _recipe(opts: IngestOptions, tokenizer: Tokenizer, loaded: Loaded) -> tuple[ChunkerName, str]:
    chunker = resolve_chunker(opts.chunker, loaded.kind)
    overlap = opts.overlap if chunker == "tokens" else 0
    contextual = opts.contextualizer.name if opts.contextualizer else ""
    return chunker, f"{chunker}:{opts.chunk_size}:{overlap}:{tokenizer.name}:{contextual}"


async def _prepare(
    target: Target, run: _Run, opts: IngestOptions, tokenizer: Tokenizer, progress: ProgressCallback | None
) -> AsyncIterator[_Prepared]:
    """Load and chunk one target, yielding its documents as they are ready (a JSON file yields many).

    Documents unchanged since the last run are counted and left out. Chunking runs in a thread, a
    group of documents at a time, so the embedding of earlier batches goes on meanwhile.
    """
    try:
        loaded = await asyncio.to_thread(_load, target, opts)
    except AiestackError as exc:
        run.failed.append(Failure(target.source, exc.message))
        loaded = []
    else:
        run.loaded_files.add(target.source)
    finally:
        run.files_loaded += 1
    todo: list[tuple[Loaded, Document, ChunkerName, bool]] = []
    for doc in loaded:
        run.seen.add(doc.source)
        if not doc.text.strip():
            run.failed.append(Failure(doc.source, "no text in it"))
            continue
        name, recipe = _recipe(opts, tokenizer, doc)
        doc_id = document_id(doc.source, doc.text, recipe)
        old = run.existing.get(doc.source)
        if old is not None and old.id == doc_id:
            run.unchanged += 1
            continue
        document = Document(doc_id, doc.text, doc.source, doc.title, {**doc.metadata, "recipe": recipe})
        todo.append((doc, document, name, old is not None))
    for start in range(0, len(todo), _CHUNK_GROUP):
        group = todo[start : start + _CHUNK_GROUP]
        chunked = await asyncio.to_thread(_chunk_group, group, opts, tokenizer)
        for (doc, document, _, replaces), chunks in zip(group, chunked, strict=True):
            if not chunks:
                run.failed.append(Failure(doc.source, "no text in it"))
                continue
            if opts.contextualizer is not None:
                contexts = await opts.contextualizer.contexts(doc.text, chunks)
                chunks = [with_context(c, ctx) for c, ctx in zip(chunks, contexts, strict=True)]
            run.total += 1
            yield _Prepared(document, chunks, replaces)
    if progress:
        progress(Progress(run.written, run.total, target.source, run.files_loaded, run.files))


_CHUNK_GROUP = 32


def _chunk_group(
    group: Sequence[tuple[Loaded, Document, ChunkerName, bool]], opts: IngestOptions, tokenizer: Tokenizer
) -> list[list[Chunk]]:
    out: list[list[Chunk]] = []
    for doc, document, name, _ in group:
        chunker = make_chunker(
            name,
            kind=doc.kind,
            tokenizer=tokenizer,
            size=opts.chunk_size,
            overlap=opts.overlap,
            language=str(doc.metadata.get("language", "")),
        )
        out.append(make_chunks(document, chunker.split(doc.text), page_at=doc.page_at if doc.pages else None))
    return out


def _load(target: Target, opts: IngestOptions) -> list[Loaded]:
    if target.path is not None:
        return load_path(target.path, fields=opts.fields, source=target.source)
    fetched = fetch(target.source, opts.urls)
    kind = kind_for_content_type(fetched.content_type, fetched.url)
    if kind is None:
        raise LoadError(f"{target.source}: no loader for content type '{fetched.content_type or 'unknown'}'.")
    return load_bytes(
        fetched.body, source=target.source, kind=kind, name=fetched.url.rsplit("/", 1)[-1], fields=opts.fields
    )


def _write_batch(
    store: DocumentStore, collection: str, batch: list[_Prepared], vectors: list[list[float]]
) -> list[bool]:
    """Store ``batch`` in one transaction; whether each document was written (False: already there)."""
    items = []
    offset = 0
    for item in batch:
        n = len(item.chunks)
        items.append((item.document, item.chunks, vectors[offset : offset + n]))
        offset += n
    return store.put_documents(collection, items)


def _tally(run: _Run, item: _Prepared, stored: bool) -> None:
    run.written += 1
    if not stored:
        run.unchanged += 1
    elif item.replaces:
        run.updated += 1
        run.chunks += len(item.chunks)
    else:
        run.added += 1
        run.chunks += len(item.chunks)


def _file_of(source: str) -> str | None:
    """The local file a stored source came from (None for URLs)."""
    if _is_url(source):
        return None
    return source.split("#", 1)[0]


def _prune(store: DocumentStore, collection: str, run: _Run) -> int:
    """Delete documents whose file is gone, and records no longer in a file loaded by this run."""
    gone: list[str] = []
    for doc in store.documents(collection):
        path = _file_of(doc.source)
        if path is None:
            continue
        if not Path(path).exists() or (path in run.loaded_files and doc.source not in run.seen):
            gone.append(doc.id)
    return store.delete_documents(collection, gone) if gone else 0
