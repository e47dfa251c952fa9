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
  thousands of one-posting rows;
- ``bm25_docs``: per chunk its terms with their frequencies and its quantised length (a term
  vector): what a delete takes out of the blocks, and what scores a candidate chunk in one
  primary-key probe.

Every write of the document store calls :meth:`on_write` inside its transaction, after taking the
collection's ``bm25_stats`` row lock (one writer per collection at a time from there to commit, so
block rows are never locked in two orders), so the statistics are always those of the committed
chunks.

A query is analysed with the shared analyser and scored with :mod:`~aiestack.stores.analysis`'s
BM25, so the ranking is the embedded store's. It touches only the blocks of its terms:

1. one round trip reads ``N``, ``avgdl`` and the query terms' document frequencies and bounds;
2. when the terms' postings are few (:data:`EXHAUSTIVE_POSTINGS`), one aggregate over them gives
   the top ``k``;
3. otherwise MaxScore: the rare terms (the *essential* ones, highest upper bound first) are scored
   alone; the ``k``-th best partial score is a lower bound ``θ`` of the final ``k``-th score. If
   the upper bounds of the frequent terms add up to less than ``θ``, no chunk that holds only
   frequent terms can reach the top ``k``; the candidates whose partial score plus that bound
   reaches ``θ`` are scored in full from their term vectors (``bm25_docs``), and the best ``k``
   of them are the exact answer. When the bound is not below ``θ``, more terms become essential,
   down to the exhaustive aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aiestack.stores import analysis
from aiestack.stores.sql.tables import chunks as chunks_table

#: Below this many postings in all, a query is one aggregate over them (no pruning).
EXHAUSTIVE_POSTINGS = 2_000
#: Chunks analysed per statement when building a collection's postings from its chunks.
REBUILD_BATCH = 5_000
#: A block with fewer postings than this is small; a term with more than :data:`MOST_SMALL_BLOCKS`
#: small blocks gets them merged into one by the write that adds the next.
SMALL_BLOCK = 128
MOST_SMALL_BLOCKS = 16

# The unfiltered top k in one round trip: MaxScore (see the module docstring) run by the server.
# The terms come sorted by bound, highest first; ``essential`` is 0 when the answer was exhaustive.
_TOP_FUNCTION = """CREATE OR REPLACE FUNCTION aiestack_bm25_top(
    p_collection text, p_terms text[], p_weights float8[], p_bounds float8[], p_postings bigint,
    p_a float8, p_c float8, p_k integer, p_exhaustive bigint)
RETURNS TABLE (bm25_key bigint, bm25_score float8, essential integer)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_n integer := cardinality(p_terms);
    v_rest float8;
    v_keys bigint[];
    v_scores float8[];
    v_kept integer;
BEGIN
    IF p_postings > p_exhaustive THEN
        FOR s IN 1 .. v_n - 1 LOOP
            SELECT coalesce(sum(x), 0) INTO v_rest FROM unnest(p_bounds[s + 1 : v_n]) AS x;
            SELECT array_agg(e.key ORDER BY e.score DESC, e.key), array_agg(e.score ORDER BY e.score DESC, e.key)
              INTO v_keys, v_scores
              FROM (SELECT u.key, sum(q.w * u.tf / (u.tf + p_a + p_c * u.norm)) AS score
                      FROM unnest(p_terms[1 : s], p_weights[1 : s]) AS q (term, w)
                      JOIN bm25_blocks b ON b.collection = p_collection AND b.term = q.term
                      CROSS JOIN LATERAL unnest(b.keys, b.tfs, b.norms) AS u (key, tf, norm)
                     GROUP BY u.key) AS e;
            IF cardinality(v_keys) >= p_k AND v_rest < v_scores[p_k] THEN
                SELECT count(*) INTO v_kept FROM unnest(v_scores) AS x WHERE x + v_rest >= v_scores[p_k];
                -- The candidates' full scores from their term vectors: one primary-key probe each.
                RETURN QUERY EXECUTE
                    'SELECT d.chunk_key, sum(q.w * v.tf / (v.tf + $3 + $4 * d.norm)) AS total, $5
                       FROM bm25_docs d
                       CROSS JOIN LATERAL unnest(d.terms, d.tfs) AS v (term, tf)
                       JOIN unnest($1, $2) AS q (term, w) ON q.term = v.term
                      WHERE d.chunk_key = ANY ($6)
                      GROUP BY d.chunk_key
                      ORDER BY total DESC, d.chunk_key
                      LIMIT $7'
                    USING p_terms, p_weights, p_a, p_c, s, v_keys[1 : v_kept], p_k;
                RETURN;
            END IF;
        END LOOP;
    END IF;
    RETURN QUERY
        SELECT u.key, sum(q.w * u.tf / (u.tf + p_a + p_c * u.norm)) AS total, 0
          FROM unnest(p_terms, p_weights) AS q (term, w)
          JOIN bm25_blocks b ON b.collection = p_collection AND b.term = q.term
          CROSS JOIN LATERAL unnest(b.keys, b.tfs, b.norms) AS u (key, tf, norm)
         GROUP BY u.key
         ORDER BY total DESC, u.key
         LIMIT p_k;
END
$fn$"""

# A term's postings, scored: (key, score) per chunk over the terms :terms with weights :weights.
_SCORED = """SELECT u.key, sum(q.w * u.tf / (u.tf + :a + :c * u.norm)) AS score
    FROM unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) AS q (term, w)
    JOIN bm25_blocks b ON b.collection = :collection AND b.term = q.term
    CROSS JOIN LATERAL unnest(b.keys, b.tfs, b.norms) AS u (key, tf, norm)
   GROUP BY u.key"""

_ADD = """WITH p AS MATERIALIZED (
    SELECT v.term, u.key, u.tf, u.norm
      FROM unnest(CAST(:t AS integer[]), CAST(:keys AS bigint[]), CAST(:tfs AS integer[]), CAST(:norms AS integer[]))
           AS u (t, key, tf, norm)
      JOIN unnest(CAST(:vocabulary AS text[])) WITH ORDINALITY AS v (term, t) ON v.t = u.t),
docs AS (
    INSERT INTO bm25_docs (chunk_key, norm, terms, tfs)
    SELECT key, min(norm), array_agg(term ORDER BY term), array_agg(tf ORDER BY term) FROM p GROUP BY key)
INSERT INTO bm25_blocks (collection, term, first_key, last_key, n, max_tf, min_norm, keys, tfs, norms)
SELECT :collection, term, min(key), max(key), count(*), max(tf), min(norm),
       array_agg(key ORDER BY key), array_agg(tf ORDER BY key), array_agg(norm ORDER BY key)
  FROM p GROUP BY term"""

_MERGE = """WITH crowded AS (
    SELECT w.term FROM unnest(CAST(:terms AS text[])) AS w (term)
     CROSS JOIN LATERAL (
         SELECT count(*) AS small FROM bm25_blocks b
          WHERE b.collection = :collection AND b.term = w.term AND b.n < :small) AS c
     WHERE c.small > :most),
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


@dataclass(frozen=True, slots=True)
class _Term:
    term: str
    df: int
    weight: float  # idf * (k1 + 1) * repeats in the query
    bound: float  # the most this term adds to any chunk's score


class PostgresTermIndex:
    """The BM25 postings of the PostgreSQL document store (see the module docstring)."""

    def __init__(self, analyzer: analysis.Analyzer | None = None) -> None:
        self.analyzer = analyzer or analysis.Analyzer()

    # ----------------------------------------------------------------------- schema

    @staticmethod
    def create(connection: sa.Connection) -> None:
        """The search function (the tables come from the migrations)."""
        # Several processes may migrate at once: CREATE OR REPLACE FUNCTION is not safe concurrently.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('aiestack_bm25_ddl'))"))
        connection.execute(sa.text(_TOP_FUNCTION))

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

    # ----------------------------------------------------------------------- writes

    def on_create(self, connection: sa.Connection, collection: str) -> None:
        connection.execute(
            sa.text(
                "INSERT INTO bm25_stats (collection, analyzer, chunks, tokens) VALUES (:c, :analyzer, 0, 0) "
                "ON CONFLICT DO NOTHING"
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
        # One writer per collection at a time from here to commit: block rows are then never
        # locked in two orders by two transactions.
        connection.execute(
            sa.text("SELECT chunks FROM bm25_stats WHERE collection = :c FOR UPDATE"), {"c": collection}
        )
        # psycopg prepares a statement run 5 times, and PostgreSQL may then plan it once for any
        # arrays: "term = ANY ($2)" becomes a linear search of thousands of terms per row (a merge
        # took minutes by the second SciFact load). Planned for their actual arrays, each write's
        # statements hash them.
        connection.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
        tokens = -self._remove(connection, collection, removed) if removed else 0
        if added:
            tokens += self._add(connection, collection, added, texts)
        connection.execute(
            sa.text(
                "UPDATE bm25_stats SET chunks = chunks + :chunks, tokens = tokens + :tokens WHERE collection = :c"
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
        self, connection: sa.Connection, collection: str, keys: Sequence[int], texts: Sequence[str]
    ) -> int:
        """Add the chunks' term vectors and one block per term; the tokens added."""
        vocabulary: dict[str, int] = {}
        term_ids: list[int] = []
        owners: list[int] = []
        tfs: list[int] = []
        norms: list[int] = []
        tokens = 0
        for key, text in zip(keys, texts, strict=True):
            counts, length = self.analyzer.counts(text)
            norm = analysis.fieldnorm(length)
            tokens += length
            for term, tf in counts.items():
                term_ids.append(vocabulary.setdefault(term, len(vocabulary) + 1))
                tfs.append(tf)
            owners.extend([key] * len(counts))
            norms.extend([norm] * len(counts))
        if not vocabulary:
            return tokens
        connection.execute(
            sa.text(_ADD),
            {
                "collection": collection,
                "vocabulary": list(vocabulary),
                "t": _array(term_ids),
                "keys": _array(owners),
                "tfs": _array(tfs),
                "norms": _array(norms),
            },
        )
        connection.execute(
            sa.text(_MERGE),
            {
                "collection": collection,
                "terms": list(vocabulary),
                "small": SMALL_BLOCK,
                "most": MOST_SMALL_BLOCKS,
            },
        )
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
            sa.text(
                "SELECT s.chunks, s.tokens, t.term, t.df, t.max_tf, t.min_norm FROM bm25_stats s "
                "LEFT JOIN LATERAL (SELECT b.term, sum(b.n) AS df, max(b.max_tf) AS max_tf, min(b.min_norm) AS min_norm "
                "FROM bm25_blocks b WHERE b.collection = s.collection AND b.term = ANY (CAST(:terms AS text[])) "
                "GROUP BY b.term) AS t ON true WHERE s.collection = :collection"
            ),
            {"collection": collection, "terms": list(wanted)},
        ).all()
        if not rows:
            return None
        chunks, tokens = int(rows[0].chunks), int(rows[0].tokens)
        if not chunks or rows[0].term is None:
            return []
        average = tokens / chunks
        terms = sorted(
            (self._term(r, wanted[r.term], chunks, average) for r in rows), key=lambda t: (-t.bound, t.term)
        )
        if allowed is None:
            return self._top(connection, collection, terms, average, k)[0]
        scorer = _Scorer(connection, collection, average, allowed)
        if sum(t.df for t in terms) <= EXHAUSTIVE_POSTINGS:
            return scorer.exhaustive(terms, k)
        # MaxScore: make the rarest terms essential, one more each time the bound is not enough.
        for split in range(1, len(terms)):
            essential, rest = terms[:split], terms[split:]
            partial = scorer.partial(essential, k, sum(t.bound for t in rest))
            if partial is None:
                continue
            return scorer.complete(partial, terms, k)
        return scorer.exhaustive(terms, k)

    @staticmethod
    def _top(
        connection: sa.Connection, collection: str, terms: Sequence[_Term], average: float, k: int
    ) -> tuple[list[tuple[int, float]], int]:
        """The unfiltered top ``k`` by the server's MaxScore, and how many terms it made essential
        (0: it scored every posting)."""
        rows = connection.execute(
            sa.text(
                "SELECT bm25_key, bm25_score, essential FROM aiestack_bm25_top(:collection, CAST(:terms AS text[]), "
                "CAST(:weights AS float8[]), CAST(:bounds AS float8[]), :postings, :a, :c, :k, :exhaustive)"
            ),
            {
                "collection": collection,
                "terms": [t.term for t in terms],
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
        return _Term(row.term, int(row.df), weight, bound * (1 + 1e-9))


def _array(values: list[int]) -> str:
    """An integer array as PostgreSQL's text form (far cheaper to send than a list adapted value by value)."""
    return "{" + ",".join(map(str, values)) + "}"


class _Scorer:
    """The SQL of one filtered query's scoring (PostgreSQL computes in float8; scores match
    tantivy's f32 to ~1e-6). A chunk's score does not depend on the filter, so the filter applies
    to the scored chunks."""

    def __init__(
        self, connection: sa.Connection, collection: str, average: float, allowed: sa.ColumnElement[bool]
    ) -> None:
        self.connection = connection
        self.collection = collection
        self.a = analysis.K1 * (1 - analysis.B)
        self.c = analysis.K1 * analysis.B / average
        self.allowed = sa.select(chunks_table.c.key).where(chunks_table.c.collection == collection, allowed)

    def _sums(self, terms: Sequence[_Term]) -> sa.Select[Any]:
        """(key, score) of the allowed chunks over ``terms``' postings."""
        scored = (
            sa.text(_SCORED)
            .bindparams(
                collection=self.collection,
                terms=[t.term for t in terms],
                weights=[t.weight for t in terms],
                a=self.a,
                c=self.c,
            )
            .columns(sa.column("key", sa.BigInteger), sa.column("score", sa.Float))
            .subquery("scored")
        )
        return sa.select(scored.c.key, scored.c.score).where(scored.c.key.in_(self.allowed))

    def exhaustive(self, terms: Sequence[_Term], k: int) -> list[tuple[int, float]]:
        sums = self._sums(terms).subquery()
        rows = self.connection.execute(
            sa.select(sums.c.key, sums.c.score).order_by(sums.c.score.desc(), sums.c.key).limit(k)
        ).all()
        return [(int(r.key), float(r.score)) for r in rows]

    def partial(self, essential: Sequence[_Term], k: int, bound: float) -> list[tuple[int, float]] | None:
        """The chunks that may still reach the top k, with their essential terms' score; None when
        the other terms' ``bound`` is not below the k-th partial score (more terms must be essential)."""
        sums = self._sums(essential).cte("sums")
        theta = sa.select(sums.c.score).order_by(sums.c.score.desc()).offset(k - 1).limit(1).scalar_subquery()
        rows = self.connection.execute(
            sa.select(sums.c.key, sums.c.score, theta.label("theta"))
            .where(sums.c.score + bound >= sa.func.coalesce(theta, 0.0))
            .order_by(sums.c.score.desc(), sums.c.key)
        ).all()
        if not rows or rows[0].theta is None or not bound < float(rows[0].theta):
            return None
        return [(int(r.key), float(r.score)) for r in rows]

    def complete(
        self, partial: list[tuple[int, float]], terms: Sequence[_Term], k: int
    ) -> list[tuple[int, float]]:
        """The candidates' full scores over all the query's ``terms``, from their term vectors."""
        rows = self.connection.execute(
            sa.text(
                "SELECT d.chunk_key, sum(q.w * v.tf / (v.tf + :a + :c * d.norm)) AS score FROM bm25_docs d "
                "CROSS JOIN LATERAL unnest(d.terms, d.tfs) AS v (term, tf) "
                "JOIN unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) AS q (term, w) ON q.term = v.term "
                "WHERE d.chunk_key = ANY (CAST(:keys AS bigint[])) GROUP BY d.chunk_key"
            ),
            {
                "a": self.a,
                "c": self.c,
                "terms": [t.term for t in terms],
                "weights": [t.weight for t in terms],
                "keys": [key for key, _ in partial],
            },
        ).all()
        scores = {int(r.chunk_key): float(r.score) for r in rows}
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
