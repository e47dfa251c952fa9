"""A static embedding model for the request path: the semantic cache's default embedder.

The model is a Model2Vec distillation of all-MiniLM-L6-v2 shipped inside the package
(``aiestack/models/static_minilm``, 7.6 MB: 256 dimensions, int8; see its README and
``scripts/distill_static_embedder.py``). A vector is the normalised mean of the text's token
vectors, so a short question embeds in about 0.1 ms on one core, where MiniLM takes milliseconds
(tens under load): cheap enough to embed every cache-eligible request on the event loop.

Short inputs (what the cache embeds: one user turn of at most a few hundred characters) are
embedded inline; long batches go to a worker thread. The weights load on first use, or ahead of
it with :meth:`load` (``aiestack serve`` does this at start).

The token ids of a printable-ASCII text are put together from its space-separated pieces, each
tokenized once and remembered (:class:`_PieceIds`): the model's BERT normaliser looks up the Unicode
category of every character, ~2,000 instructions a character, and most of a question's words were
seen before. The ids are the tokenizer's own, in the same order (tests compare the vectors with
``StaticModel.encode``).

A vector is a function of the token ids alone, and the last few are remembered by their ids
(:data:`MEANS_REMEMBERED`): on a new prompt the injection guard's ``static`` head pools the prompt and
its first and last parts (:func:`aiestack.guardrails.features.static_features`), then the semantic
cache embeds the normalised question, which for a one-sentence question has the ids of that first part
(the tokenizer lower-cases, and both drop the closing punctuation). The cache's embedding is then a
look-up, not a second pooling of the same tokens (~0.35 of the ~0.45 M instructions it cost).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from array import array
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aiestack.errors import ProviderBadRequest, ProviderUnavailable

if TYPE_CHECKING:
    from model2vec import StaticModel

PROVIDER = "model2vec"
NAME = "static-minilm"
PACKAGED = Path(__file__).resolve().parent / "static_minilm"
#: Inputs up to this many characters in total are embedded on the calling thread.
INLINE_CHARS = 4096
#: Pieces (space-separated words) whose token ids are remembered, and the longest one remembered:
#: a few thousand words cover most of any traffic (Zipf); each entry is ~200 bytes.
PIECES_REMEMBERED = 8192
PIECE_MAX_CHARS = 32
#: Unit mean vectors remembered by their token ids (each ~1 KB): enough for the texts of the requests
#: in flight between the guard's pooling and the cache's embedding.
MEANS_REMEMBERED = 256
#: ASCII punctuation (``string.punctuation``), where BERT's pre-tokenizer splits a piece.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


class StaticEmbeddings:
    """An :class:`~aiestack.models.base.EmbeddingModel` backed by a Model2Vec static model."""

    def __init__(self, path: Path = PACKAGED, *, name: str = NAME) -> None:
        self.path = path
        self.name = name
        self._model: StaticModel | None = None
        self._pieces: _PieceIds | None = None
        self._lock = threading.Lock()
        # Token ids -> unit mean vector (read-only), oldest first; worker threads embed long batches.
        self._means: dict[tuple[int, ...], np.ndarray] = {}
        # The lower-cased form of a text pooled recently -> its token ids, where they are the same (see
        # _PieceIds.lowered_same): the cache embeds the guard's lower-cased first part without tokenizing it.
        self._lowered: dict[str, tuple[int, ...]] = {}
        self._means_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dim(self) -> int:
        """The vector length, as the model's config states it (reading it loads nothing)."""
        if self._model is not None:
            return int(self._model.dim)
        try:
            return int(json.loads((self.path / "config.json").read_text(encoding="utf-8"))["hidden_dim"])
        except (OSError, ValueError, KeyError, TypeError):
            return int(self._load().dim)

    async def load(self) -> None:
        """Load the model now, off the event loop."""
        if self._model is None:
            await asyncio.to_thread(self._load)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        return (await self.embed_array(texts)).tolist()

    async def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed`'s vectors as one float32 array, a row a text (the same values, without building
        lists of floats that a caller on the request path turns back into an array)."""
        if isinstance(texts, str):
            raise ProviderBadRequest(
                "embed() takes a sequence of texts, not one string.",
                provider=PROVIDER,
                hint="Wrap it: [text].",
            )
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._model is not None and sum(len(t) for t in texts) <= INLINE_CHARS:
            return self._encode(list(texts))
        return await asyncio.to_thread(self._encode, list(texts))

    async def aclose(self) -> None:
        self._model = None

    def pooled(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, max) of each text's token vectors, both unit length, on the calling thread (loading the
        model first if need be). The means are :meth:`embed`'s vectors; the maxima (per dimension, the
        largest value any token has) are what the injection guard's ``static`` head also reads
        (:func:`aiestack.guardrails.features.static_features`)."""
        model = self._load()
        distinct = list(dict.fromkeys(texts))  # a one-sentence prompt's first and last parts are one text
        keys = [tuple(row) for row in _token_ids(model, distinct, self._pieces)]
        means, maxes = _pool(model, keys, with_max=True)
        # Both made unit length in one pass over one array (row by row: the same bits as two passes).
        n = len(distinct)
        both = np.empty((2 * n, means.shape[1]), dtype=np.float32)
        both[:n] = means
        both[n:] = maxes
        both = _unit(both)
        self._remember(keys, both[:n], distinct)
        if n < len(texts):
            at = {text: i for i, text in enumerate(distinct)}
            rows = [at[text] for text in texts]
            both = both[rows + [n + i for i in rows]]
            n = len(texts)
        return both[:n], both[n:]

    def _encode(self, texts: list[str]) -> np.ndarray:
        """The unit mean vectors of ``texts``: remembered ones looked up by their token ids, the others pooled."""
        model = self._load()
        with self._means_lock:  # texts the guard pooled, lower-cased (the cache's questions): no tokenizer
            seen = [self._lowered.get(text) for text in texts]
            found = [self._means.get(k) for k in seen if k is not None]
        if len(found) == len(texts) and all(vector is not None for vector in found):
            return np.stack(found)  # type: ignore[arg-type]  # every row was found
        ids = _token_ids(model, texts, self._pieces)
        keys = [tuple(row) for row in ids]
        with self._means_lock:
            known = [self._means.get(k) for k in keys]
        missing = [i for i, vector in enumerate(known) if vector is None]
        if not missing:
            return np.stack(known)  # type: ignore[arg-type]  # every row was found
        fresh = _unit(np.asarray(_pool(model, [ids[i] for i in missing], with_max=False)[0], dtype=np.float32))
        self._remember([keys[i] for i in missing], fresh)
        if len(missing) == len(keys):
            return fresh
        out = np.empty((len(keys), fresh.shape[1]), dtype=np.float32)
        for j, i in enumerate(missing):
            known[i] = fresh[j]
        for i, vector in enumerate(known):
            out[i] = vector
        return out

    def _remember(self, keys: list[tuple[int, ...]], vectors: np.ndarray, texts: Sequence[str] = ()) -> None:
        """Keep the unit mean vector of each token-id sequence (the oldest forgotten past :data:`MEANS_REMEMBERED`),
        and the ids of each of ``texts`` (``keys``' texts) under its lower-cased form where that has the same ids."""
        kept = vectors.copy()  # one copy, read-only: its rows are read-only views
        kept.flags.writeable = False
        pieces = self._pieces
        lowered = [(text.lower(), key) for text, key in zip(texts, keys, strict=True)
                   if pieces is not None and pieces.lowered_same(text)] if texts else []
        with self._means_lock:
            means = self._means
            for key, row in zip(keys, kept, strict=True):
                means.pop(key, None)
                means[key] = row
            while len(means) > MEANS_REMEMBERED:
                del means[next(iter(means))]
            by_text = self._lowered
            for text, key in lowered:
                by_text.pop(text, None)
                by_text[text] = key
            while len(by_text) > MEANS_REMEMBERED:
                del by_text[next(iter(by_text))]

    def _load(self) -> StaticModel:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                try:
                    from model2vec import StaticModel
                except ImportError:
                    raise ProviderUnavailable(
                        "model2vec is not installed, so the static embedder cannot run.",
                        provider=PROVIDER,
                        hint="pip install model2vec, or set [cache] embedder = 'embeddings'.",
                    ) from None
                if not (self.path / "model.safetensors").is_file():
                    raise ProviderUnavailable(
                        f"The static embedding model is missing from {self.path}.",
                        provider=PROVIDER,
                        hint="Reinstall aiestack, or set [cache] embedder = 'embeddings'.",
                    )
                model = StaticModel.from_pretrained(str(self.path))
                self._pieces = _PieceIds(model)
                self._model = model
            return self._model


class _PieceIds:
    """``model.tokenize``'s ids, put together from remembered pieces where that gives the same ids.

    For the packaged model's tokenizer (a BERT normaliser and pre-tokenizer, WordPiece, no special
    tokens added) a printable-ASCII text is tokenized piece by piece: the normaliser works character
    by character (lower case; nothing else changes printable ASCII) and the pre-tokenizer splits at
    spaces and punctuation, so the ids of ``"a b"`` are those of ``"a"`` then ``"b"``. Truncation at
    ``max_length`` tokens is applied to the whole, then the unknown token is dropped, as
    ``model.tokenize`` does. Any other text, or any other kind of tokenizer, goes to ``model.tokenize``.

    The pre-tokenizer also makes each ASCII punctuation character a word of its own, so a new piece is
    put together the same way from its runs between punctuation (``"1234)."`` from ``"1234"``, ``")"``
    and ``"."``, each remembered): the tokenizer then reads only the part not seen before (a call costs ~50,000
    instructions for a short piece), and ``"1234)"`` in the prompt's first part is a look-up.
    Not when the piece holds an added token (``"[UNK]"``), which is matched before that split.
    """

    def __init__(self, model: StaticModel) -> None:
        self._model = model
        tokenizer = model.tokenizer
        config = json.loads(tokenizer.to_str())
        model_type = (config.get("model") or {}).get("type")
        self.piecewise = (
            (config.get("normalizer") or {}).get("type") == "BertNormalizer"
            and (config.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and model_type == "WordPiece"
            and not config.get("post_processor")
        )
        truncation = tokenizer.truncation
        self._max_tokens: int | None = int(truncation["max_length"]) if truncation else None
        self._unk = model.unk_token_id

        # Added tokens ("[UNK]", "[PAD]") are found in the text before the pre-tokenizer splits it.
        added = tuple(str(token["content"]).lower() for token in config.get("added_tokens") or ())

        # A run of ASCII letters and digits is one word for the BERT pre-tokenizer, lower-cased (or not) by
        # the normaliser and nothing else: its WordPiece ids are found here, by the model's own greedy
        # longest-match-first rule over its vocabulary (a tokenizer call costs ~50,000 instructions; a
        # prompt's new words are mostly such runs: numbers, names). Not when an added token could be in it.
        wordpiece_model = config.get("model") or {}
        vocab: dict[str, int] = dict(wordpiece_model.get("vocab") or {}) if self.piecewise else {}
        unk_id = vocab.get(str(wordpiece_model.get("unk_token", "[UNK]")))
        here = bool(vocab) and unk_id is not None and all(not token.isalnum() for token in added)
        unk = unk_id if unk_id is not None else 0
        lower = bool((config.get("normalizer") or {}).get("lowercase", True))
        prefix = str(wordpiece_model.get("continuing_subword_prefix", "##"))
        longest = int(wordpiece_model.get("max_input_chars_per_word", 100))

        def wordpiece(word: str) -> tuple[int, ...]:
            """WordPiece's ids of one pre-tokenized ASCII word (the tokenizers library's rule)."""
            if len(word) > longest:
                return (unk,)
            out: list[int] = []
            start, n = 0, len(word)
            while start < n:
                end = n
                while start < end:
                    found = vocab.get(word[start:end] if start == 0 else prefix + word[start:end])
                    if found is not None:
                        break
                    end -= 1
                else:
                    return (unk,)
                out.append(found)
                start = end
            return tuple(out)

        def piece(text: str) -> tuple[int, ...]:
            if here and text.isascii() and text.isalnum():
                return wordpiece(text.lower() if lower else text)
            return tuple(tokenizer.encode(text, add_special_tokens=False).ids)

        def split_piece(text: str) -> tuple[int, ...]:
            parts = [part for part in _PUNCTUATION.split(text) if part]
            if len(parts) < 2 or any(token in text.lower() for token in added):
                return piece(text)
            ids: tuple[int, ...] = ()
            for part in parts:
                ids += remembered(part)
            return ids

        remembered = lru_cache(maxsize=PIECES_REMEMBERED)(split_piece)
        self._piece: Callable[[str], tuple[int, ...]] = piece
        self._remembered = remembered
        self._added = added
        self._lowers = self.piecewise and lower

    def lowered_same(self, text: str) -> bool:
        """Whether ``text.lower()`` has ``text``'s ids: printable ASCII, tokenized piecewise by a normaliser that
        lower-cases (so each piece's ids are its lower-cased piece's), holding no added token (matched in the
        text as written, before that normaliser)."""
        return (self._lowers and text.isascii() and text.isprintable()
                and not any(token in text.lower() for token in self._added))

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        if not self.piecewise:
            return self._model.tokenize(texts)
        rows: list[list[int] | None] = []
        others: list[str] = []
        for text in texts:
            if text.isascii() and text.isprintable():
                rows.append(self._ids(text))
            else:
                rows.append(None)
                others.append(text)
        if not others:
            return rows  # type: ignore[return-value]  # every row was filled
        rest = iter(self._model.tokenize(others))
        return [row if row is not None else next(rest) for row in rows]

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = []
        remembered, piece = self._remembered, self._piece
        for word in text.split(" "):
            if word:
                ids += remembered(word) if len(word) <= PIECE_MAX_CHARS else piece(word)
        if self._max_tokens is not None and len(ids) > self._max_tokens:
            del ids[self._max_tokens :]
        if self._unk is not None:
            unk = self._unk
            return [i for i in ids if i != unk]
        return ids


def _token_ids(model: StaticModel, texts: list[str], pieces: _PieceIds | None) -> list[list[int]]:
    """The token ids :func:`_pool` averages: each text cut at ``max_length × median_token_length``
    characters, then ``model.tokenize`` (through ``pieces`` when given)."""
    limit = model.max_length * model.median_token_length if model.max_length is not None else None
    cut = [t[:limit] for t in texts] if limit is not None else texts
    return pieces.tokenize(cut) if pieces is not None else model.tokenize(cut)


def _pool(model: StaticModel, ids: Sequence[Sequence[int]], *, with_max: bool) -> tuple[np.ndarray, np.ndarray]:
    """The means of each row of token ids' vectors and, with ``with_max``, their per-dimension maxima
    (float32, not normalised; zeros for a text without tokens; else an empty array).

    The means are what ``model.encode(texts)`` returns (the same values, bit for bit), without its
    per-call set-up. ``StaticModel.encode`` sets the tokenizer's truncation and back, batches, builds a
    progress bar and buckets texts by length on every call: ~140 µs for one short question, of which
    the tokenizer is ~45 µs and the mean ~10 µs. This is its arithmetic for the model's own settings
    (the tokenizer's truncation stays at ``model.max_length``, as ``encode`` leaves it; the ids come
    from :func:`_token_ids`): the mean of the token vectors (weighted and remapped when the model has
    weights or a token mapping; an int8 table averaged in float64 into float32, as ``encode`` does),
    then normalised when the model normalises. tests/models/test_static_embeddings.py compares it with
    ``encode``.

    An integer table without weights (the packaged model's) is pooled by :func:`_pool_integer`.
    """
    table = model.embedding
    dtype = np.dtype(np.float32) if table.dtype == np.int8 else table.dtype
    out = np.zeros((len(ids), model.dim), dtype=dtype)
    top = np.zeros((len(ids) if with_max else 0, model.dim), dtype=np.float32)
    if table.dtype.kind in "iu" and model.weights is None:
        _pool_integer(model, ids, out, top)
    else:
        for i, ids_row in enumerate(ids):
            if not ids_row:
                continue
            row = list(ids_row)
            rows = table[model.token_mapping[row] if model.token_mapping is not None else row]
            if model.weights is not None:
                rows = rows * model.weights[row][:, None]
            out[i] = rows.mean(axis=0)
            if len(top):
                top[i] = rows.max(axis=0)
    if model.normalize:
        out32 = out.astype(np.float32, copy=False)
        return (out32 / (_row_norms(out32) + 1e-32)).astype(out.dtype, copy=False), top
    return out, top


def _pool_integer(model: StaticModel, ids: Sequence[Sequence[int]], out: np.ndarray, top: np.ndarray) -> None:
    """:func:`_pool`'s means (into ``out``) and, when ``top`` has rows, maxima (into ``top``) for an integer
    table without weights: one gather and one cast for all rows, then a plain float64 sum per row of
    ids (``np.add.reduceat`` over all rows at once costs more: ~125k instructions a prompt more, measured
    with callgrind in session 11, as it reduces column by column), instead of a gather from a Python list and ``ndarray.mean`` (each a few tens of thousands of
    instructions on the request path: the list's conversion, the mean's Python wrapper and its
    buffered int8 → float64 cast). The same bits as ``rows.mean(axis=0)``: that mean sums in float64
    and divides by the count, and a sum of at most ``max_length`` int8 values is an integer float64
    holds exactly, whatever the order of the additions; the maximum is exact."""
    if not any(ids):
        return
    flat = np.frombuffer(array("q", chain.from_iterable(ids)), dtype=np.int64)
    rows = model.embedding[model.token_mapping[flat] if model.token_mapping is not None else flat]
    wide = rows.astype(np.float64)
    add, maximum = np.add.reduce, np.maximum.reduce
    end = 0
    for i, row in enumerate(ids):
        if not row:
            continue
        start, end = end, end + len(row)
        out[i] = add(wide[start:end], axis=0) / len(row)
        if len(top):
            top[i] = maximum(rows[start:end], axis=0)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its norm; a zero row stays zero (looked for only when there is one: the
    ``np.where`` costs more than the division)."""
    norms = _row_norms(vectors)
    if np.count_nonzero(norms) < len(norms):
        norms = np.where(norms == 0, 1.0, norms)
    out: np.ndarray = vectors / norms
    return out


def _row_norms(vectors: np.ndarray) -> np.ndarray:
    """``np.linalg.norm(vectors, axis=1, keepdims=True)`` for a real 2-D array: its own formula
    (``sqrt`` of the row sums of squares, NumPy's pairwise sum), the same bits, without its argument
    handling (~8 NumPy calls where 3 do; each costs microseconds on the request path)."""
    return np.sqrt(np.add.reduce(vectors * vectors, axis=1, keepdims=True))
