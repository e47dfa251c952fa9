"""BM25 on plain PostgreSQL: postings in blocks and term vectors in tables, changed with the chunks.

Three tables (migration 0013; PostgreSQL only: SQLite's term index is tantivy beside the database):

- ``bm25_stats``: per collection, its chunk count ``N``, its token count (``avgdl = tokens / N``)
  and the analyser the postings were built with (:data:`~aiestack.stores.analysis.ANALYZER_ID`);
- ``bm25_blocks``: the postings, one row per (collection, term, block): the block's chunk keys,
  term frequencies and quantised lengths packed as arrays, its count ``n``, its key range and two
  pruning bounds (the largest tf and the smallest quantised length in it; they only grow looser
  when chunks go, so they stay valid without a rescan). A write adds one block per term it holds,
  so a batch of 256 abstracts writes ~5,000 rows where one row per posting wrote ~26,000 (and
  twice as many index entries). A term's document frequency is the sum of its blocks' ``n``
  (read from the primary key, which includes ``n`` and the bounds). Small blocks are merged when a
  term has more than :data:`MOST_SMALL_BLOCKS` of them, so one-document writes do not leave
  thousands of one-posting rows. A write of fewer than :data:`CHECK_ALL_BELOW` chunks checks every
  term it holds (so a term has at most ``MOST_SMALL_BLOCKS + 1`` small blocks after such writes); a
  larger one checks one in :data:`MERGE_EVERY` of them, those whose hash modulo it is the
  collection's write count's (``bm25_stats.writes``): a term present in every large write is
  checked every ``MERGE_EVERY`` writes; a rarer one gains fewer blocks between its checks;
- ``bm25_docs``: per chunk its terms with their frequencies and its quantised length (a term
  vector): what a delete takes out of the blocks, and what scores a candidate chunk in one
  primary-key probe.

Every write of the document store calls :meth:`on_write` inside its transaction, after taking the
collection's ``bm25_stats`` row lock (one writer per collection at a time from there to commit, so
block rows are never locked in two orders), so the statistics are always those of the committed
chunks.

``bm25_stats.generation`` (migration 0014) is set by every such write to the id of its
transaction, so a process that holds a collection's posting lists knows whether they are current.

A query is analysed with the shared analyser and scored with :mod:`~aiestack.stores.analysis`'s
BM25, so the ranking is the embedded store's. One statement reads the collection's statistics and
generation and, in binary, the blocks of the query's terms that this process does not hold for that
generation (primary-key lookups only); the lists are scored in numpy by MaxScore and kept in a
bounded per-process cache (:mod:`~aiestack.stores.documents_postgres_postings`). A filtered query
ranks every chunk of its terms, then asks which of the best pass the filter, deeper until ``k`` do.
"""

from __future__ import annotations

import struct
import threading
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from aiestack.stores import analysis
from aiestack.stores.documents_postgres_postings import (
    CACHE_BYTES,
    Generation,
    Postings,
    PostingsCache,
    accumulate,
    decode_bigints,
    decode_integers,
    postings,
    ranked,
    top_k,
)
from aiestack.stores.sql import copy as pg_copy
from aiestack.stores.sql.copy import copy_binary
from aiestack.stores.sql.tables import chunks as chunks_table

#: Chunks analysed per statement when building a collection's postings from its chunks.
REBUILD_BATCH = 5_000
#: A block with fewer postings than this is small; a term with more than :data:`MOST_SMALL_BLOCKS`
#: small blocks gets them merged into one by the write that adds the next.
SMALL_BLOCK = 128
MOST_SMALL_BLOCKS = 16
#: A bulk load merges no blocks while it writes; at its end it merges the small blocks of the terms
#: that have more than this many (later writes bring a term back to :data:`MOST_SMALL_BLOCKS`).
#: Merging every crowded term at the end of a SciFact load (21 batches of 256) rewrote 418k of its
#: 513k postings: 1.0-1.1 s of server time, as long as the HNSW build beside it; a term's blocks
#: are read once into the postings cache, so a few dozen rows a term cost little.
BULK_MOST_SMALL_BLOCKS = 64
#: A write of this many chunks or more checks for crowded small blocks one in ``MERGE_EVERY`` of its
#: terms (a power of two; see the module docstring). Checking every term of every write took 43% of
#: a SciFact load's time in PostgreSQL (an index probe per term, ~6,000 a batch of 256 abstracts).
CHECK_ALL_BELOW = 64
MERGE_EVERY = 8

# The terms a write checks for crowded small blocks: one index probe per checked term
# (MATERIALIZED: inlined, the planner ran the count once per block row of the terms, 9x the probes).
_CROWDED_OF_TERMS = """SELECT b.term FROM unnest(CAST(:terms AS text[])) AS w (term)
      JOIN bm25_blocks b ON b.collection = :collection AND b.term = w.term AND b.n < :small
     WHERE (hashtext(w.term) & (:every - 1)) = :phase
     GROUP BY b.term HAVING count(*) > :most"""
# Every crowded term of a collection (after a bulk load): one pass over its blocks' primary key.
_CROWDED_ALL = """SELECT term FROM bm25_blocks WHERE collection = :collection AND n < :small
     GROUP BY term HAVING count(*) > :most"""
_MERGE = """WITH crowded AS MATERIALIZED ({crowded}),
gone AS (
    DELETE FROM bm25_blocks b USING crowded c
     WHERE b.collection = :collection AND b.term = c.term AND b.n < :small
    RETURNING b.term, b.first_key, b.last_key, b.keys, b.tfs, b.norms)
INSERT INTO bm25_blocks (collection, term, first_key, last_key, n, max_tf, min_norm, keys, tfs, norms)
SELECT :collection, g.term, min(g.first_key), max(g.last_key), count(u.key), max(u.tf), min(u.norm),
       array_agg(u.key ORDER BY u.key), array_agg(u.tf ORDER BY u.key), array_agg(u.norm ORDER BY u.key)
  FROM gone g CROSS JOIN LATERAL unnest(g.keys, g.tfs, g.norms) AS u (key, tf, norm)
 GROUP BY g.term"""

_REMOVE = """WITH gone (term, key) AS (SELECT * FROM unnest(CAST(:terms AS text[]), CAST(:keys AS bigint[]))),
hit AS (
    SELECT DISTINCT b.term, b.first_key FROM gone g
      JOIN bm25_blocks b ON b.collection = :collection AND b.term = g.term AND b.first_key <= g.key AND b.last_key >= g.key),
kept AS (
    SELECT h.term, h.first_key, k.keys, k.tfs, k.norms, k.n
      FROM hit h
      JOIN bm25_blocks b ON b.collection = :collection AND b.term = h.term AND b.first_key = h.first_key
      CROSS JOIN LATERAL (
          SELECT coalesce(array_agg(u.key ORDER BY u.key), '{}') AS keys, coalesce(array_agg(u.tf ORDER BY u.key), '{}') AS tfs,
                 coalesce(array_agg(u.norm ORDER BY u.key), '{}') AS norms, count(*) AS n
            FROM unnest(b.keys, b.tfs, b.norms) AS u (key, tf, norm)
           WHERE u.key <> ALL (CAST(:removed AS bigint[]))) AS k)
UPDATE bm25_blocks b SET keys = kept.keys, tfs = kept.tfs, norms = kept.norms, n = kept.n
  FROM kept WHERE b.collection = :collection AND b.term = kept.term AND b.first_key = kept.first_key"""


# The statistics, the generation and the blocks of the terms not held for that generation (all of
# them when the generation is not the one held), in one snapshot; arrays in binary.
_READ = """SELECT s.generation, s.chunks, s.tokens, b.term,
       array_send(b.keys) AS keys, array_send(b.tfs) AS tfs, array_send(b.norms) AS norms
  FROM bm25_stats s
  LEFT JOIN bm25_blocks b ON b.collection = s.collection
   AND b.term = ANY (CASE WHEN s.generation = CAST(:generation AS bigint) THEN CAST(:missing AS text[])
                          ELSE CAST(:terms AS text[]) END)
 WHERE s.collection = :collection
 ORDER BY b.term, b.first_key"""
_BIGINTS = postgresql.ARRAY(sa.BigInteger)
#: A filtered query first asks which of its best ``FILTER_DEPTH * k`` chunks pass, then 8× deeper each time.
FILTER_DEPTH = 4
#: A binary ``int4[]``/``int8[]`` header: dimensions, has-NULLs flag, element type, length, lower bound.
_HEADER = np.dtype([("ndim", ">i4"), ("nulls", ">i4"), ("oid", ">i4"), ("length", ">i4"), ("lower", ">i4")])
#: A ``bm25_blocks`` row's fixed-width fields after the term, each length-prefixed, then the header of its keys.
_BLOCK_FIELDS = np.dtype(
    [("l_first", ">i4"), ("first", ">i8"), ("l_last", ">i4"), ("last", ">i8"), ("l_n", ">i4"), ("n", ">i4"),
     ("l_tf", ">i4"), ("tf", ">i4"), ("l_norm", ">i4"), ("norm", ">i4"), ("l_keys", ">i4"), ("keys", _HEADER)]
)
_ARRAY_HEAD = np.dtype([("l_array", ">i4"), ("array", _HEADER)])
#: A ``bm25_docs`` row up to its terms' items: the field count, the key, the norm, the terms' header.
_DOC_FIELDS = np.dtype(
    [("count", ">i2"), ("l_key", ">i4"), ("key", ">i8"), ("l_norm", ">i4"), ("norm", ">i4"), ("l_terms", ">i4"), ("terms", _HEADER)]
)


def _array_header(header: np.ndarray, oid: int, lengths: np.ndarray) -> None:
    """Fill one-dimensional array headers (no NULLs, lower bound 1) of ``lengths`` elements of ``oid``."""
    header["ndim"], header["nulls"], header["oid"], header["length"], header["lower"] = 1, 0, oid, lengths, 1


class PostgresTermIndex:
    """The BM25 postings of the PostgreSQL document store (see the module docstring)."""

    def __init__(self, analyzer: analysis.Analyzer | None = None, *, cache_bytes: int = CACHE_BYTES) -> None:
        self.analyzer = analyzer or analysis.Analyzer()
        self.cache = PostingsCache(cache_bytes)
        self._bulk_lock = threading.Lock()
        self._bulk: Counter[str] = Counter()  # collections inside a bulk load in this process

    # ----------------------------------------------------------------------- schema

    def stale_collections(self, connection: sa.Connection) -> list[str]:
        """Collections whose postings are missing or were built by another analyser."""
        rows = connection.execute(
            sa.text(
                "SELECT c.name FROM collections c LEFT JOIN bm25_stats s ON s.collection = c.name "
                "WHERE s.analyzer IS DISTINCT FROM :analyzer ORDER BY c.name"
            ),
            {"analyzer": analysis.ANALYZER_ID},
        )
        return list(rows.scalars())

    def rebuild(self, connection: sa.Connection, collection: str) -> None:
        """Build a collection's postings and statistics from its chunks (in the open transaction)."""
        self.on_drop(connection, collection)
        connection.execute(sa.text("DELETE FROM bm25_stats WHERE collection = :c"), {"c": collection})
        self.on_create(connection, collection)
        last = 0
        while True:
            rows = connection.execute(
                sa.select(chunks_table.c.key, chunks_table.c.text)
                .where(chunks_table.c.collection == collection, chunks_table.c.key > last)
                .order_by(chunks_table.c.key)
                .limit(REBUILD_BATCH)
            ).all()
            if not rows:
                return
            self.on_write(connection, collection, [], [r.key for r in rows], [r.text for r in rows])
            last = rows[-1].key

    # ----------------------------------------------------------------------- bulk loads

    def begin_bulk(self, collection: str) -> None:
        """Until :meth:`end_bulk`, this process's writes to ``collection`` merge no small blocks
        (:meth:`merge_crowded` does it once at the end: a SciFact load spent a sixth of its time
        merging the blocks of its last batches, each merge rewriting what the next one rewrote
        again) and commit without waiting for the WAL flush (``synchronous_commit = off``, as
        SQLite's ``synchronous = NORMAL`` commits the embedded store's batches: a crash may lose
        the last fraction of a second of them, never half a batch; a resumed load puts them again;
        the load's last commit, synchronous, makes every batch durable)."""
        with self._bulk_lock:
            self._bulk[collection] += 1

    def end_bulk(self, collection: str) -> None:
        with self._bulk_lock:
            self._bulk[collection] -= 1
            if self._bulk[collection] <= 0:
                del self._bulk[collection]

    def _in_bulk(self, collection: str) -> bool:
        with self._bulk_lock:
            return collection in self._bulk

    def merge_crowded(self, connection: sa.Connection, collection: str) -> None:
        """Merge the small blocks of every term of ``collection`` that has more than
        :data:`BULK_MOST_SMALL_BLOCKS` of them (in the open transaction, which then commits
        synchronously). The lists do not change, so neither does the generation."""
        connection.execute(
            sa.text(
                "SELECT writes, set_config('plan_cache_mode', 'force_custom_plan', true) "
                "FROM bm25_stats WHERE collection = :c FOR UPDATE"
            ),
            {"c": collection},
        )
        connection.execute(
            sa.text(_MERGE.format(crowded=_CROWDED_ALL)),
            {"collection": collection, "small": SMALL_BLOCK, "most": BULK_MOST_SMALL_BLOCKS},
        )

    # ----------------------------------------------------------------------- writes

    def on_create(self, connection: sa.Connection, collection: str) -> None:
        connection.execute(
            sa.text(
                "INSERT INTO bm25_stats (collection, analyzer, chunks, tokens, generation) "
                "VALUES (:c, :analyzer, 0, 0, pg_current_xact_id()::text::bigint) ON CONFLICT DO NOTHING"
            ),
            {"c": collection, "analyzer": analysis.ANALYZER_ID},
        )

    def on_drop(self, connection: sa.Connection, collection: str) -> None:
        connection.execute(
            sa.text(
                "DELETE FROM bm25_docs WHERE chunk_key IN (SELECT key FROM chunks WHERE collection = :c)"
            ),
            {"c": collection},
        )
        connection.execute(sa.text("DELETE FROM bm25_blocks WHERE collection = :c"), {"c": collection})

    def on_write(
        self,
        connection: sa.Connection,
        collection: str,
        removed: Sequence[int],
        added: Sequence[int],
        texts: Sequence[str],
    ) -> None:
        if not removed and not added:
            return
        bulk = self._in_bulk(collection)
        # One writer per collection at a time from here to commit: block rows are then never
        # locked in two orders by two transactions. In the same round trip, the transaction's
        # settings: psycopg prepares a statement run 5 times, and PostgreSQL may then plan it once
        # for any arrays: "term = ANY ($2)" becomes a linear search of thousands of terms per row
        # (a merge took minutes by the second SciFact load). Planned for their actual arrays, each
        # write's statements hash them. Inside a bulk load, see :meth:`begin_bulk`.
        writes = connection.scalar(
            sa.text(
                "SELECT writes, set_config('plan_cache_mode', 'force_custom_plan', true), "
                "set_config('synchronous_commit', :commit, true) FROM bm25_stats WHERE collection = :c FOR UPDATE"
            ),
            {"c": collection, "commit": "off" if bulk else "on"},
        )
        tokens = -self._remove(connection, collection, removed) if removed else 0
        if added:
            tokens += self._add(connection, collection, added, self.analyzer.postings(texts), int(writes or 0), merge=not bulk)
        connection.execute(
            sa.text(
                "UPDATE bm25_stats SET chunks = chunks + :chunks, tokens = tokens + :tokens, writes = writes + 1, "
                "generation = pg_current_xact_id()::text::bigint WHERE collection = :c"
            ),
            {"c": collection, "chunks": len(added) - len(removed), "tokens": tokens},
        )

    @staticmethod
    def _remove(connection: sa.Connection, collection: str, keys: Sequence[int]) -> int:
        """Take the chunks out of their terms' blocks (dropping emptied blocks); the tokens removed."""
        rows = connection.execute(
            sa.text(
                "DELETE FROM bm25_docs WHERE chunk_key = ANY (CAST(:keys AS bigint[])) RETURNING chunk_key, terms, tfs"
            ),
            {"keys": list(keys)},
        ).all()
        if not rows:
            return 0
        terms = [term for row in rows for term in row.terms]
        owners = [row.chunk_key for row in rows for _ in row.terms]
        connection.execute(
            sa.text(_REMOVE),
            {
                "collection": collection,
                "terms": terms,
                "keys": owners,
                "removed": [row.chunk_key for row in rows],
            },
        )
        connection.execute(
            sa.text(
                "DELETE FROM bm25_blocks WHERE collection = :collection AND term = ANY (CAST(:terms AS text[])) AND n = 0"
            ),
            {"collection": collection, "terms": sorted(set(terms))},
        )
        return sum(sum(row.tfs) for row in rows)

    def _add(
        self,
        connection: sa.Connection,
        collection: str,
        keys: Sequence[int],
        batch: analysis.Postings,
        writes: int,
        *,
        merge: bool = True,
    ) -> int:
        """Add the chunks' term vectors and one block per term (``batch``: their texts analysed;
        ``writes``: the collection's write count, which picks the terms checked for merging; none
        when not ``merge``); the tokens added."""
        tokens = int(batch.lengths.sum())
        if not batch.vocabulary:
            return tokens
        vocabulary = batch.vocabulary
        norms = np.array([analysis.fieldnorm(int(length)) for length in batch.lengths], dtype=np.int64)
        term_ids, owners = batch.term + 1, np.asarray(keys, dtype=np.int64)[batch.text]
        tfs, norms = batch.tf, norms[batch.text]
        self._copy_postings(connection, collection, vocabulary, term_ids, owners, tfs, norms)
        if not merge:
            return tokens
        every = 1 if len(keys) < CHECK_ALL_BELOW else MERGE_EVERY
        connection.execute(
            sa.text(_MERGE.format(crowded=_CROWDED_OF_TERMS)),
            {
                "collection": collection,
                "terms": list(vocabulary),
                "small": SMALL_BLOCK,
                "most": MOST_SMALL_BLOCKS,
                "every": every,
                "phase": writes % every,
            },
        )
        return tokens

    @staticmethod
    def _copy_postings(
        connection: sa.Connection,
        collection: str,
        vocabulary: list[str],
        term_ids: np.ndarray,
        owners: np.ndarray,
        tfs: np.ndarray,
        norms: np.ndarray,
    ) -> None:
        """One block per term and one term vector per chunk, grouped by numpy and sent with binary
        COPY (grouped on the server by ``array_agg``, they took a fifth of a SciFact load)."""
        t0, k0, f0, m0 = (np.asarray(v, dtype=np.int64) for v in (term_ids, owners, tfs, norms))
        order = np.lexsort((k0, t0))
        t, k, f, m = t0[order], k0[order], f0[order], m0[order]
        starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        n = np.diff(np.r_[starts, len(t)])
        most_tf, least_norm = np.maximum.reduceat(f, starts), np.minimum.reduceat(m, starts)
        terms, term_lengths = pg_copy.text_items(vocabulary)  # a text field is laid out as an array item
        term_starts = np.cumsum(term_lengths) - term_lengths
        # A block row: the field count and collection (the same bytes each row), the term, the
        # fixed-width fields, then each array's header and its items (slices of the packed items).
        name = pg_copy.text(collection)
        head = struct.pack(">hi", 10, len(name)) + name
        fixed = np.empty(len(starts), dtype=_BLOCK_FIELDS)
        fixed["l_first"], fixed["first"], fixed["l_last"], fixed["last"] = 8, k[starts], 8, k[starts + n - 1]
        fixed["l_n"], fixed["n"], fixed["l_tf"], fixed["tf"], fixed["l_norm"], fixed["norm"] = 4, n, 4, most_tf, 4, least_norm
        fixed["l_keys"] = 20 + 12 * n
        _array_header(fixed["keys"], pg_copy.INT8_OID, n)
        ints = np.empty(len(starts), dtype=_ARRAY_HEAD)
        ints["l_array"] = 20 + 8 * n
        _array_header(ints["array"], pg_copy.INT4_OID, n)
        row_terms = t[starts] - 1
        blocks = pg_copy.interleave(
            [
                (head, np.zeros(len(starts)), np.full(len(starts), len(head))),
                (terms, term_starts[row_terms], term_lengths[row_terms]),
                pg_copy.records(fixed),
                (pg_copy.int_items(k, "q"), 12 * starts, 12 * n),
                pg_copy.records(ints),
                (pg_copy.int_items(f, "i"), 8 * starts, 8 * n),
                pg_copy.records(ints),
                (pg_copy.int_items(m, "i"), 8 * starts, 8 * n),
            ]
        )
        copy_binary(
            connection,
            "bm25_blocks",
            ("collection", "term", "first_key", "last_key", "n", "max_tf", "min_norm", "keys", "tfs", "norms"),
            [blocks],
        )
        # Term vectors: each chunk's postings came together (chunk after chunk); terms by name.
        chunk = np.cumsum(np.r_[False, k0[1:] != k0[:-1]])
        by_name = np.empty(len(vocabulary), dtype=np.int64)
        by_name[np.argsort(np.array(vocabulary))] = np.arange(len(vocabulary))  # code point order, as sorted()
        order = np.lexsort((by_name[t0 - 1], chunk))
        firsts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
        count = np.diff(np.r_[firsts, len(k0)])
        posting_terms = t0[order] - 1
        names = pg_copy.gather(terms, term_starts[posting_terms], term_lengths[posting_terms])
        name_lengths = np.add.reduceat(term_lengths[posting_terms], firsts)
        doc = np.empty(len(firsts), dtype=_DOC_FIELDS)
        doc["count"], doc["l_key"], doc["key"], doc["l_norm"], doc["norm"] = 4, 8, k0[firsts], 4, m0[firsts]
        doc["l_terms"] = 20 + name_lengths
        _array_header(doc["terms"], pg_copy.TEXT_OID, count)
        tf_head = np.empty(len(firsts), dtype=_ARRAY_HEAD)
        tf_head["l_array"] = 20 + 8 * count
        _array_header(tf_head["array"], pg_copy.INT4_OID, count)
        vectors = pg_copy.interleave(
            [
                pg_copy.records(doc),
                (names, np.cumsum(name_lengths) - name_lengths, name_lengths),
                pg_copy.records(tf_head),
                (pg_copy.int_items(f0[order], "i"), 8 * firsts, 8 * count),
            ]
        )
        copy_binary(connection, "bm25_docs", ("chunk_key", "norm", "terms", "tfs"), [vectors])

    # ----------------------------------------------------------------------- search

    def search(
        self,
        connection: sa.Connection,
        collection: str,
        query: str,
        k: int,
        allowed: sa.ColumnElement[bool] | None = None,
    ) -> list[tuple[int, float]] | None:
        """(chunk key, score) best first, ties by key; None when the collection has no statistics.

        ``allowed`` is a condition on ``chunks`` (a filter): only chunks meeting it are ranked.
        """
        wanted = self.analyzer.query(query)
        read = self._read(connection, collection, sorted(wanted))
        if read is None:
            return None
        chunks, found = read
        lists, weights = self._weighted(wanted, chunks, found)
        if not lists:
            return []
        if allowed is None:
            return top_k(lists, weights, k)
        return self._filtered(connection, collection, lists, weights, k, allowed)

    def held_top(self, collection: str, query: str, k: int) -> tuple[int, list[tuple[int, float]]] | None:
        """The unfiltered answer from this process's lists alone, with the generation it is right
        for; None when a list is not held. The caller checks the generation in the statement that
        reads the chunks, and calls :meth:`search` when it moved."""
        wanted = self.analyzer.query(query)
        generation, held = self.cache.held(collection, sorted(wanted))
        if generation is None or len(held) < len(wanted):
            return None
        if not generation.chunks:
            return generation.number, []
        lists, weights = self._weighted(wanted, generation.chunks, held)
        return generation.number, top_k(lists, weights, k) if lists else []

    @staticmethod
    def _weighted(
        wanted: Mapping[str, int], chunks: int, found: Mapping[str, Postings]
    ) -> tuple[list[Postings], list[float]]:
        """The non-empty lists of the query's terms and their weights (idf * (k1 + 1) * repeats)."""
        terms = [term for term in sorted(found) if len(found[term].keys)]
        return [found[t] for t in terms], [analysis.term_weight(chunks, len(found[t].keys)) * wanted[t] for t in terms]

    def _read(
        self, connection: sa.Connection, collection: str, terms: list[str]
    ) -> tuple[int, dict[str, Postings]] | None:
        """The collection's chunk count and the posting lists of ``terms`` (from the cache when
        current; a term the collection lacks gets an empty list); None when the collection has no
        statistics."""
        generation, held = self.cache.held(collection, terms)
        rows = connection.execute(
            sa.text(_READ),
            {
                "collection": collection,
                "generation": None if generation is None else generation.number,
                "terms": terms,
                "missing": [t for t in terms if t not in held],
            },
        ).all()
        if not rows:
            self.cache.forget(collection)
            return None
        current = Generation(int(rows[0][0]), int(rows[0][1]), int(rows[0][2]))
        if current != generation:
            held = {}
        blocks: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {t: [] for t in terms if t not in held}
        for row in rows:
            if row[3] is not None:
                blocks[row[3]].append((decode_bigints(row[4]), decode_integers(row[5]), decode_integers(row[6])))
        a = analysis.K1 * (1 - analysis.B)
        c = analysis.K1 * analysis.B / (current.tokens / current.chunks) if current.chunks else 0.0
        fetched = {term: postings(b, a, c) for term, b in blocks.items()}
        self.cache.keep(collection, current, fetched)
        return current.chunks, held | fetched

    @staticmethod
    def _filtered(
        connection: sa.Connection,
        collection: str,
        lists: list[Postings],
        weights: list[float],
        k: int,
        allowed: sa.ColumnElement[bool],
    ) -> list[tuple[int, float]]:
        """The best ``k`` chunks that meet ``allowed``: every chunk of the terms ranked (a chunk's
        score does not depend on the filter), then the best asked about, deeper until ``k`` pass."""
        keys, scores = accumulate(lists, weights)
        passed: list[int] = []
        asked, depth = 0, FILTER_DEPTH * k
        while len(passed) < k and asked < len(keys):
            order = ranked(keys, scores, depth)
            batch = keys[order[asked:]]
            kept = set(
                connection.scalars(
                    sa.select(chunks_table.c.key).where(
                        chunks_table.c.collection == collection,
                        chunks_table.c.key == sa.func.any(sa.bindparam("keys", batch.tolist(), type_=_BIGINTS)),
                        allowed,
                    )
                )
            )
            passed.extend(int(i) for i in order[asked:] if int(keys[i]) in kept)
            asked, depth = len(order), depth * 8
        return [(int(keys[i]), float(scores[i])) for i in passed[:k]]
