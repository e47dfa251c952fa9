"""BM25 on plain PostgreSQL: postings and term statistics in tables, changed with the chunks.

Three tables, created by :meth:`PostgresTermIndex.create` (PostgreSQL only; SQLite's term index is
tantivy beside the database):

- ``bm25_stats``: per collection, its chunk count ``N``, its token count (``avgdl = tokens / N``)
  and the analyser the postings were built with (:data:`~aiestack.stores.analysis.ANALYZER_ID`);
- ``bm25_terms``: per (collection, term) an id, the document frequency ``df`` and two bounds for
  pruning: the largest term frequency and the smallest quantised length seen (bounds only grow
  looser when chunks go, so they stay valid without a rescan);
- ``bm25_postings``: (term id, chunk key) -> term frequency and the chunk's quantised length, with
  the primary key ``(term_id, chunk_key)`` covering both (an index-only scan reads a term's
  postings) and an index on ``chunk_key`` (to remove a chunk's postings).

Every write of the document store calls :meth:`on_write` inside its transaction, after taking the
collection's ``bm25_stats`` row lock (so concurrent writers to one collection never deadlock on
term rows), so the statistics are always those of the committed chunks.

A query is analysed with the shared analyser and scored with :mod:`~aiestack.stores.analysis`'s
BM25, so the ranking is the embedded store's. It touches only the postings of its terms:

1. one round trip reads ``N``, ``avgdl`` and the query terms' rows;
2. when the terms' postings are few (:data:`EXHAUSTIVE_POSTINGS`), one aggregate over them gives
   the top ``k``;
3. otherwise MaxScore: the rare terms (the *essential* ones, highest upper bound first) are scored
   alone; the ``k``-th best partial score is a lower bound ``θ`` of the final ``k``-th score. If
   the upper bounds of the frequent terms add up to less than ``θ``, no chunk that holds only
   frequent terms can reach the top ``k``; the candidates whose partial score plus that bound
   reaches ``θ`` get their frequent terms' contributions by primary-key probes, and the best ``k``
   of them are the exact answer. When the bound is not below ``θ``, more terms become essential,
   down to the exhaustive aggregate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from aiestack.stores import analysis
from aiestack.stores.sql.copy import copy_binary, int_rows
from aiestack.stores.sql.tables import chunks as chunks_table

#: Below this many postings in all, a query is one aggregate over them (no pruning).
EXHAUSTIVE_POSTINGS = 2_000
#: Chunks analysed per statement when building a collection's postings from its chunks.
REBUILD_BATCH = 5_000

_META = sa.MetaData()
_stats = sa.Table(
    "bm25_stats",
    _META,
    sa.Column("collection", sa.String, primary_key=True),
    sa.Column("analyzer", sa.String),
    sa.Column("chunks", sa.BigInteger),
    sa.Column("tokens", sa.BigInteger),
)
_terms = sa.Table(
    "bm25_terms",
    _META,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("collection", sa.String),
    sa.Column("term", sa.String),
    sa.Column("df", sa.Integer),
    sa.Column("max_tf", sa.Integer),
    sa.Column("min_norm", sa.Integer),
)
_postings = sa.Table(
    "bm25_postings",
    _META,
    sa.Column("term_id", sa.BigInteger, primary_key=True),
    sa.Column("chunk_key", sa.BigInteger, primary_key=True),
    sa.Column("tf", sa.Integer),
    sa.Column("norm", sa.Integer),
)

_DDL = (
    """CREATE TABLE IF NOT EXISTS bm25_stats (
        collection text PRIMARY KEY REFERENCES collections (name) ON DELETE CASCADE,
        analyzer text NOT NULL,
        chunks bigint NOT NULL DEFAULT 0,
        tokens bigint NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS bm25_terms (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        collection text NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
        term text NOT NULL,
        df integer NOT NULL,
        max_tf integer NOT NULL,
        min_norm integer NOT NULL,
        CONSTRAINT uq_bm25_terms_collection_term UNIQUE (collection, term))""",
    """CREATE TABLE IF NOT EXISTS bm25_postings (
        term_id bigint NOT NULL,
        chunk_key bigint NOT NULL,
        tf integer NOT NULL,
        norm integer NOT NULL,
        CONSTRAINT pk_bm25_postings PRIMARY KEY (term_id, chunk_key) INCLUDE (tf, norm))""",
    "CREATE INDEX IF NOT EXISTS ix_bm25_postings_chunk_key ON bm25_postings (chunk_key)",
    # The unfiltered top k in one round trip: MaxScore (see the module docstring) run by the server.
    # The terms come sorted by bound, highest first; ``essential`` is 0 when the answer was exhaustive.
    """CREATE OR REPLACE FUNCTION aiestack_bm25_top(
        p_ids bigint[], p_weights float8[], p_bounds float8[], p_postings bigint,
        p_a float8, p_c float8, p_k integer, p_exhaustive bigint)
    RETURNS TABLE (bm25_key bigint, bm25_score float8, essential integer)
    LANGUAGE plpgsql STABLE AS $fn$
    DECLARE
        n integer := cardinality(p_ids);
        rest float8;
        keys bigint[];
        scores float8[];
        kept integer;
    BEGIN
        IF p_postings > p_exhaustive THEN
            FOR s IN 1 .. n - 1 LOOP
                SELECT coalesce(sum(b), 0) INTO rest FROM unnest(p_bounds[s + 1 : n]) AS b;
                SELECT array_agg(e.chunk_key ORDER BY e.score DESC, e.chunk_key),
                       array_agg(e.score ORDER BY e.score DESC, e.chunk_key)
                  INTO keys, scores
                  FROM (SELECT p.chunk_key, sum(q.w * p.tf / (p.tf + p_a + p_c * p.norm)) AS score
                          FROM unnest(p_ids[1 : s], p_weights[1 : s]) AS q (id, w)
                          JOIN bm25_postings p ON p.term_id = q.id
                         GROUP BY p.chunk_key) AS e;
                IF cardinality(keys) >= p_k AND rest < scores[p_k] THEN
                    SELECT count(*) INTO kept FROM unnest(scores) AS x WHERE x + rest >= scores[p_k];
                    -- EXECUTE: planned for these very arrays, so the candidates are index probes
                    -- (a cached generic plan may filter every posting of the frequent terms by
                    -- "= ANY (candidates)" instead: quadratic, minutes at 100k chunks).
                    RETURN QUERY EXECUTE
                        'WITH more AS (
                            SELECT p.chunk_key, sum(q.w * p.tf / (p.tf + $3 + $4 * p.norm)) AS score
                              FROM unnest($1, $2) AS q (id, w)
                              JOIN bm25_postings p ON p.term_id = q.id AND p.chunk_key = ANY ($5)
                             GROUP BY p.chunk_key)
                        SELECT c.key, c.score + coalesce(more.score, 0) AS total, $7
                          FROM unnest($5, $6) AS c (key, score)
                          LEFT JOIN more ON more.chunk_key = c.key
                         ORDER BY total DESC, c.key
                         LIMIT $8'
                        USING p_ids[s + 1 : n], p_weights[s + 1 : n], p_a, p_c, keys[1 : kept], scores[1 : kept], s, p_k;
                    RETURN;
                END IF;
            END LOOP;
        END IF;
        RETURN QUERY
            SELECT p.chunk_key, sum(q.w * p.tf / (p.tf + p_a + p_c * p.norm)) AS total, 0
              FROM unnest(p_ids, p_weights) AS q (id, w)
              JOIN bm25_postings p ON p.term_id = q.id
             GROUP BY p.chunk_key
             ORDER BY total DESC, p.chunk_key
             LIMIT p_k;
    END
    $fn$""",
)

_BIGINTS = postgresql.ARRAY(sa.BigInteger)
_INTS = postgresql.ARRAY(sa.Integer)
_FLOATS = postgresql.ARRAY(sa.Float)
_TEXTS = postgresql.ARRAY(sa.Text)


@dataclass(frozen=True, slots=True)
class _Term:
    id: int
    df: int
    max_tf: int
    min_norm: int
    weight: float  # idf * (k1 + 1) * repeats in the query
    bound: float  # the most this term adds to any chunk's score


class PostgresTermIndex:
    """The BM25 postings of the PostgreSQL document store (see the module docstring)."""

    def __init__(self, analyzer: analysis.Analyzer | None = None) -> None:
        self.analyzer = analyzer or analysis.Analyzer()

    # ----------------------------------------------------------------------- schema

    @staticmethod
    def create(connection: sa.Connection) -> None:
        # Several processes may migrate at once: CREATE OR REPLACE FUNCTION is not safe concurrently.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('aiestack_bm25_ddl'))"))
        for statement in _DDL:
            connection.execute(sa.text(statement))

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
        connection.execute(_stats.delete().where(_stats.c.collection == collection))
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

    # ----------------------------------------------------------------------- writes

    def on_create(self, connection: sa.Connection, collection: str) -> None:
        connection.execute(
            postgresql.insert(_stats)
            .values(collection=collection, analyzer=analysis.ANALYZER_ID, chunks=0, tokens=0)
            .on_conflict_do_nothing()
        )

    def on_drop(self, connection: sa.Connection, collection: str) -> None:
        connection.execute(
            _postings.delete().where(
                _postings.c.term_id.in_(sa.select(_terms.c.id).where(_terms.c.collection == collection))
            )
        )
        connection.execute(_terms.delete().where(_terms.c.collection == collection))

    def on_write(
        self, connection: sa.Connection, collection: str, removed: Sequence[int], added: Sequence[int], texts: Sequence[str]
    ) -> None:
        if not removed and not added:
            return
        # One writer per collection at a time from here to commit: term rows are then never
        # locked in two orders by two transactions.
        connection.execute(sa.select(_stats.c.chunks).where(_stats.c.collection == collection).with_for_update())
        tokens = -self._remove(connection, removed) if removed else 0
        if added:
            tokens += self._add(connection, collection, added, texts)
        connection.execute(
            _stats.update()
            .where(_stats.c.collection == collection)
            .values(chunks=_stats.c.chunks + (len(added) - len(removed)), tokens=_stats.c.tokens + tokens)
        )

    @staticmethod
    def _remove(connection: sa.Connection, keys: Sequence[int]) -> int:
        """Delete the chunks' postings and lower their terms' df; the tokens removed."""
        rows = connection.execute(
            sa.text(
                "WITH gone AS (DELETE FROM bm25_postings WHERE chunk_key = ANY(:keys) RETURNING term_id, tf) "
                "SELECT term_id, count(*) AS n, sum(tf) AS tokens FROM gone GROUP BY term_id ORDER BY term_id"
            ).bindparams(sa.bindparam("keys", type_=_BIGINTS)),
            {"keys": list(keys)},
        ).all()
        if not rows:
            return 0
        ids = [r.term_id for r in rows]
        connection.execute(
            sa.text(
                "UPDATE bm25_terms t SET df = t.df - d.n FROM unnest(:ids, :ns) AS d(id, n) WHERE t.id = d.id"
            ).bindparams(sa.bindparam("ids", type_=_BIGINTS), sa.bindparam("ns", type_=_INTS)),
            {"ids": ids, "ns": [int(r.n) for r in rows]},
        )
        connection.execute(_terms.delete().where(_terms.c.id.in_(ids), _terms.c.df <= 0))
        return sum(int(r.tokens) for r in rows)

    def _add(self, connection: sa.Connection, collection: str, keys: Sequence[int], texts: Sequence[str]) -> int:
        """Insert the chunks' postings and raise their terms' df; the tokens added."""
        per_chunk: list[tuple[int, Counter[str], int]] = []
        df: Counter[str] = Counter()
        max_tf: dict[str, int] = {}
        min_norm: dict[str, int] = {}
        tokens = 0
        for key, text in zip(keys, texts, strict=True):
            counts, length = self.analyzer.counts(text)
            norm = analysis.fieldnorm(length)
            tokens += length
            per_chunk.append((key, counts, norm))
            df.update(counts.keys())
            for term, tf in counts.items():
                if tf > max_tf.get(term, 0):
                    max_tf[term] = tf
                if norm < min_norm.get(term, norm + 1):
                    min_norm[term] = norm
        if not df:
            return tokens
        terms = sorted(df)  # a fixed lock order
        ids = {
            row.term: row.id
            for row in connection.execute(
                sa.text(
                    "INSERT INTO bm25_terms (collection, term, df, max_tf, min_norm) "
                    "SELECT :collection, * FROM unnest(:terms, :dfs, :max_tfs, :min_norms) "
                    "ON CONFLICT (collection, term) DO UPDATE SET df = bm25_terms.df + excluded.df, "
                    "max_tf = greatest(bm25_terms.max_tf, excluded.max_tf), "
                    "min_norm = least(bm25_terms.min_norm, excluded.min_norm) "
                    "RETURNING term, id"
                ).bindparams(
                    sa.bindparam("terms", type_=_TEXTS),
                    sa.bindparam("dfs", type_=_INTS),
                    sa.bindparam("max_tfs", type_=_INTS),
                    sa.bindparam("min_norms", type_=_INTS),
                ),
                {
                    "collection": collection,
                    "terms": terms,
                    "dfs": [df[t] for t in terms],
                    "max_tfs": [max_tf[t] for t in terms],
                    "min_norms": [min_norm[t] for t in terms],
                },
            )
        }
        sizes = [len(counts) for _, counts, _ in per_chunk]
        columns = [
            (np.fromiter((ids[t] for _, counts, _ in per_chunk for t in counts), np.int64, sum(sizes)), "q"),
            (np.repeat([key for key, _, _ in per_chunk], sizes), "q"),
            (np.fromiter((tf for _, counts, _ in per_chunk for tf in counts.values()), np.int32, sum(sizes)), "i"),
            (np.repeat([norm for _, _, norm in per_chunk], sizes), "i"),
        ]
        copy_binary(connection, "bm25_postings", ("term_id", "chunk_key", "tf", "norm"), [int_rows(columns)])
        return tokens

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
        rows = connection.execute(
            sa.select(_stats.c.chunks, _stats.c.tokens, _terms.c.term, _terms.c.id, _terms.c.df, _terms.c.max_tf, _terms.c.min_norm)
            .select_from(
                _stats.outerjoin(
                    _terms,
                    sa.and_(_terms.c.collection == _stats.c.collection, _terms.c.term.in_(list(wanted) or [""])),
                )
            )
            .where(_stats.c.collection == collection)
        ).all()
        if not rows:
            return None
        chunks, tokens = int(rows[0].chunks), int(rows[0].tokens)
        if not chunks or rows[0].id is None:
            return []
        average = tokens / chunks
        terms = sorted(
            (self._term(r, wanted[r.term], chunks, average) for r in rows),
            key=lambda t: (-t.bound, t.id),
        )
        if allowed is None:
            return self._top(connection, terms, average, k)[0]
        scorer = _Scorer(connection, average, allowed, collection)
        if sum(t.df for t in terms) <= EXHAUSTIVE_POSTINGS:
            return scorer.exhaustive(terms, k)
        # MaxScore: make the rarest terms essential, one more each time the bound is not enough.
        for split in range(1, len(terms)):
            essential, rest = terms[:split], terms[split:]
            bound = sum(t.bound for t in rest)
            partial = scorer.partial(essential, k, bound)
            if partial is None:
                continue
            return scorer.complete(partial, rest, k)
        return scorer.exhaustive(terms, k)

    @staticmethod
    def _top(connection: sa.Connection, terms: Sequence[_Term], average: float, k: int) -> tuple[list[tuple[int, float]], int]:
        """The unfiltered top ``k`` by the server's MaxScore, and how many terms it made essential
        (0: it scored every posting)."""
        rows = connection.execute(
            sa.text(
                "SELECT bm25_key, bm25_score, essential FROM aiestack_bm25_top(:ids, :weights, :bounds, :postings, :a, :c, :k, :exhaustive)"
            ).bindparams(
                sa.bindparam("ids", type_=_BIGINTS),
                sa.bindparam("weights", type_=_FLOATS),
                sa.bindparam("bounds", type_=_FLOATS),
            ),
            {
                "ids": [t.id for t in terms],
                "weights": [t.weight for t in terms],
                "bounds": [t.bound for t in terms],
                "postings": sum(t.df for t in terms),
                "a": analysis.K1 * (1 - analysis.B),
                "c": analysis.K1 * analysis.B / average,
                "k": k,
                "exhaustive": EXHAUSTIVE_POSTINGS,
            },
        ).all()
        return [(int(r.bm25_key), float(r.bm25_score)) for r in rows], int(rows[0].essential) if rows else 0

    @staticmethod
    def _term(row: Any, repeats: int, chunks: int, average: float) -> _Term:
        weight = analysis.term_weight(chunks, int(row.df)) * repeats
        bound = analysis.term_score(weight, int(row.max_tf), int(row.min_norm), average)
        # The bound holds for every chunk: tf / (tf + norm(dl)) grows with tf and shrinks with dl.
        return _Term(int(row.id), int(row.df), int(row.max_tf), int(row.min_norm), weight, bound * (1 + 1e-9))


class _Scorer:
    """The SQL of one query's scoring (PostgreSQL computes in float8; scores match tantivy's f32 to ~1e-6)."""

    def __init__(self, connection: sa.Connection, average: float, allowed: sa.ColumnElement[bool] | None, collection: str) -> None:
        self.connection = connection
        self.a = analysis.K1 * (1 - analysis.B)
        self.c = analysis.K1 * analysis.B / average
        self.allowed = allowed
        self.collection = collection

    def _sums(self, terms: Sequence[_Term], keys: Sequence[int] | None = None) -> sa.Select[Any]:
        """(chunk_key, score) summed over ``terms``' postings (among ``keys`` when given)."""
        query = (
            sa.func.unnest(
                sa.bindparam("ids", [t.id for t in terms], type_=_BIGINTS),
                sa.bindparam("weights", [t.weight for t in terms], type_=_FLOATS),
            )
            .table_valued(sa.column("term_id", sa.BigInteger), sa.column("weight", sa.Float))
            .render_derived(name="q")
        )
        p = _postings
        tf = sa.cast(p.c.tf, sa.Float)
        score = sa.func.sum(query.c.weight * tf / (tf + self.a + self.c * p.c.norm)).label("score")
        statement = sa.select(p.c.chunk_key, score).select_from(query.join(p, p.c.term_id == query.c.term_id))
        if keys is not None:
            statement = statement.where(p.c.chunk_key == sa.func.any(sa.bindparam("keys", list(keys), type_=_BIGINTS)))
        if self.allowed is not None:
            statement = statement.where(
                p.c.chunk_key.in_(
                    sa.select(chunks_table.c.key).where(chunks_table.c.collection == self.collection, self.allowed)
                )
            )
        return statement.group_by(p.c.chunk_key)

    def exhaustive(self, terms: Sequence[_Term], k: int) -> list[tuple[int, float]]:
        sums = self._sums(terms).subquery()
        rows = self.connection.execute(
            sa.select(sums.c.chunk_key, sums.c.score).order_by(sums.c.score.desc(), sums.c.chunk_key).limit(k)
        ).all()
        return [(int(r.chunk_key), float(r.score)) for r in rows]

    def partial(self, essential: Sequence[_Term], k: int, bound: float) -> list[tuple[int, float]] | None:
        """The chunks that may still reach the top k, with their essential terms' score; None when
        the other terms' ``bound`` is not below the k-th partial score (more terms must be essential)."""
        sums = self._sums(essential).cte("sums")
        theta = (
            sa.select(sums.c.score).order_by(sums.c.score.desc()).offset(k - 1).limit(1).scalar_subquery()
        )
        rows = self.connection.execute(
            sa.select(sums.c.chunk_key, sums.c.score, theta.label("theta"))
            .where(sums.c.score + bound >= sa.func.coalesce(theta, 0.0))
            .order_by(sums.c.score.desc(), sums.c.chunk_key)
        ).all()
        if not rows or rows[0].theta is None or not bound < float(rows[0].theta):
            return None
        return [(int(r.chunk_key), float(r.score)) for r in rows]

    def complete(self, partial: list[tuple[int, float]], rest: Sequence[_Term], k: int) -> list[tuple[int, float]]:
        """Add the non-essential terms' contributions to the candidates (primary-key probes)."""
        scores = dict(partial)
        keys = list(scores)
        for row in self.connection.execute(self._sums(rest, keys)).all():
            scores[int(row.chunk_key)] += float(row.score)
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
