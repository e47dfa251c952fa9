"""The vectorised binary COPY encoding gives the same bytes as encoding one row at a time."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from aiestack.stores import documents_postgres_bm25 as bm25
from aiestack.stores.sql import copy as pg_copy

pytestmark = pytest.mark.unit


def test_gather_and_interleave_cut_pieces_in_row_order() -> None:
    assert pg_copy.gather(b"abcdef", np.array([4, 0, 2]), np.array([2, 1, 0])).tobytes() == b"efa"
    fixed = np.array([(1, 7), (2, 8)], dtype=[("a", ">i2"), ("b", ">i4")])
    rows = pg_copy.interleave([pg_copy.records(fixed), (b"xyzw", np.array([0, 1]), np.array([1, 3]))])
    assert rows == struct.pack(">hi", 1, 7) + b"x" + struct.pack(">hi", 2, 8) + b"yzw"
    assert pg_copy.interleave([(b"", np.zeros(0), np.zeros(0))]) == b""


def test_gather_copies_large_pieces_as_slices_and_small_ones_at_once() -> None:
    rng = np.random.default_rng(3)
    buffer = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    lengths = np.array([0, 1, pg_copy.SLICE_BYTES - 1, pg_copy.SLICE_BYTES, 5_000, 3, 0, 900, 7])
    starts = rng.integers(0, len(buffer) - 5_000, len(lengths))
    expected = b"".join(buffer[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True))
    assert pg_copy.gather(buffer, starts, lengths).tobytes() == expected
    assert pg_copy.gather(np.frombuffer(buffer, dtype=np.uint8), starts[3:5], lengths[3:5]).tobytes() == expected[
        1 + pg_copy.SLICE_BYTES - 1 : 1 + pg_copy.SLICE_BYTES - 1 + pg_copy.SLICE_BYTES + 5_000
    ]


def test_text_items_are_the_items_one_by_one() -> None:
    values = ["", "a", "naïve café", "x" * 300]
    packed, lengths = pg_copy.text_items(values)
    assert packed == b"".join(pg_copy.text_item(v) for v in values)
    assert lengths.tolist() == [len(pg_copy.text_item(v)) for v in values]
    assert pg_copy.text_items([])[0] == b""


def _reference(collection: str, vocabulary: list[str], term_ids: list[int], owners: list[int], tfs: list[int], norms: list[int]) -> dict[str, bytes]:
    """Both tables' rows encoded field by field with :func:`pg_copy.row`."""
    postings = list(zip(term_ids, owners, tfs, norms, strict=True))
    blocks = []
    for term_id in sorted(set(term_ids)):
        mine = sorted((p for p in postings if p[0] == term_id), key=lambda p: p[1])
        keys, counts, lengths = (np.array([p[i] for p in mine]) for i in (1, 2, 3))
        blocks.append(
            pg_copy.row(
                pg_copy.text(collection),
                pg_copy.text(vocabulary[term_id - 1]),
                pg_copy.bigint(int(keys[0])),
                pg_copy.bigint(int(keys[-1])),
                pg_copy.integer(len(mine)),
                pg_copy.integer(int(counts.max())),
                pg_copy.integer(int(lengths.min())),
                pg_copy.array_header(pg_copy.INT8_OID, len(mine)) + pg_copy.int_items(keys, "q"),
                pg_copy.array_header(pg_copy.INT4_OID, len(mine)) + pg_copy.int_items(counts, "i"),
                pg_copy.array_header(pg_copy.INT4_OID, len(mine)) + pg_copy.int_items(lengths, "i"),
            )
        )
    docs = []
    for owner in dict.fromkeys(owners):
        mine = sorted((p for p in postings if p[1] == owner), key=lambda p: vocabulary[p[0] - 1])
        docs.append(
            pg_copy.row(
                pg_copy.bigint(owner),
                pg_copy.integer(mine[0][3]),
                pg_copy.array_header(pg_copy.TEXT_OID, len(mine)) + b"".join(pg_copy.text_item(vocabulary[p[0] - 1]) for p in mine),
                pg_copy.array_header(pg_copy.INT4_OID, len(mine)) + pg_copy.int_items(np.array([p[2] for p in mine]), "i"),
            )
        )
    return {"bm25_blocks": b"".join(blocks), "bm25_docs": b"".join(docs)}


def test_postings_rows_match_the_field_by_field_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    vocabulary = ["zeta", "alpha", "café", "b", "naïve", "alphabet", "日本", "x" * 40]
    term_ids: list[int] = []
    owners: list[int] = []
    tfs: list[int] = []
    norms: list[int] = []
    for key in (5, 9, 10, 2**40, 11):  # chunk after chunk, as a write sends them
        chosen = rng.choice(len(vocabulary), size=int(rng.integers(1, len(vocabulary) + 1)), replace=False)
        norm = int(rng.integers(0, 256))
        for term in chosen:
            term_ids.append(int(term) + 1)
            owners.append(key)
            tfs.append(int(rng.integers(1, 9)))
            norms.append(norm)
    sent: dict[str, bytes] = {}

    def capture(connection: Any, table: str, columns: Any, rows: Any) -> None:
        sent[table] = b"".join(rows)

    monkeypatch.setattr(bm25, "copy_binary", capture)
    bm25.PostgresTermIndex._copy_postings(None, "docs-é", vocabulary, term_ids, owners, tfs, norms)  # type: ignore[arg-type]
    assert sent == _reference("docs-é", vocabulary, term_ids, owners, tfs, norms)


def test_packed_rows_are_the_rows_one_by_one() -> None:
    vectors = np.array([[0.5, -1.25, 3e-8], [1.0, 0.0, -0.0]], dtype=np.float32)
    packed = pg_copy.packed_rows(
        2,
        [
            ("bigint", [1, 2**40]),
            ("bytes", [pg_copy.text("naïve"), pg_copy.text("")]),
            ("integer", [-3, 7]),
            ("double", [1.5, 1765000000.125]),
            ("bytes", [pg_copy.jsonb(b'{"a":[1]}'), pg_copy.jsonb(b"{}")]),
            ("real[]", vectors),
        ],
    )
    expected = b"".join(
        pg_copy.row(pg_copy.bigint(k), pg_copy.text(t), pg_copy.integer(i), pg_copy.double(d), pg_copy.jsonb(j), pg_copy.real_array(v))
        for k, t, i, d, j, v in zip([1, 2**40], ["naïve", ""], [-3, 7], [1.5, 1765000000.125], [b'{"a":[1]}', b"{}"], vectors, strict=True)
    )
    assert packed == expected
    assert pg_copy.packed_rows(0, [("bigint", []), ("real[]", np.zeros((0, 3), np.float32))]) == b""
    with pytest.raises(ValueError, match="Unknown COPY column kind"):  # a typo is not silently skipped
        pg_copy.packed_rows(1, [("uuid", ["x"])])
