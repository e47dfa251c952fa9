"""Binary ``COPY ... FROM STDIN`` on PostgreSQL, with the rows encoded by numpy and struct.

A batch write of the PostgreSQL document store sends hundreds of thousands of values (a 384-d
vector per chunk, a posting per distinct term of each chunk). psycopg's ``write_row`` formats them
one Python call at a time; here whole columns are packed into PostgreSQL's binary COPY format at
once (``bigint``, ``integer``, ``double precision``, ``text``, ``jsonb`` and ``real[]`` fields), so the client's share of a
write is a few ``numpy`` calls. The format: a signature, then per row a field count and, per field,
its length and bytes (big-endian), then a trailer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_FLOAT4_OID = 700
INT8_OID = 20
INT4_OID = 23
TEXT_OID = 25
#: One ``real`` element of an array in binary: its length (4) and its big-endian value.
_FLOAT4_ITEM = np.dtype([("length", ">i4"), ("value", ">f4")])


def copy_binary(connection: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[bytes]) -> None:
    """COPY encoded rows (each from :func:`row`, or a packed block of them) into ``table``."""
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_SIGNATURE)
        for block in rows:
            copy.write(block)
        copy.write(_TRAILER)


def row(*fields: bytes) -> bytes:
    """One row of already encoded fields."""
    return struct.pack(">h", len(fields)) + b"".join(struct.pack(">i", len(f)) + f for f in fields)


def bigint(value: int) -> bytes:
    return struct.pack(">q", value)


def integer(value: int) -> bytes:
    return struct.pack(">i", value)


def double(value: float) -> bytes:
    """A ``double precision`` field."""
    return struct.pack(">d", value)


def text(value: str) -> bytes:
    return value.encode()


def jsonb(serialised: bytes) -> bytes:
    """A JSON document already serialised to UTF-8 (jsonb's binary form is a version byte, then text)."""
    return b"\x01" + serialised


def real_array(vector: np.ndarray) -> bytes:
    """A one-dimensional ``real[]`` (float32 values, stored bit for bit)."""
    items = np.empty(len(vector), dtype=_FLOAT4_ITEM)
    items["length"] = 4
    items["value"] = vector
    return struct.pack(">iiiii", 1, 0, _FLOAT4_OID, len(vector), 1) + items.tobytes()


def int_rows(columns: Sequence[tuple[np.ndarray, str]]) -> bytes:
    """Many rows of integer fields at once: ``columns`` are equal-length arrays with their width
    (``"q"`` for bigint, ``"i"`` for integer)."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for number, (_, width) in enumerate(columns):
        fields += [(f"length{number}", ">i4"), (f"value{number}", f">{'i8' if width == 'q' else 'i4'}")]
    packed = np.empty(len(columns[0][0]) if columns else 0, dtype=np.dtype(fields))
    packed["count"] = len(columns)
    for number, (values, width) in enumerate(columns):
        packed[f"length{number}"] = 8 if width == "q" else 4
        packed[f"value{number}"] = values
    return packed.tobytes()


def array_header(oid: int, length: int) -> bytes:
    """The start of a one-dimensional array of ``length`` elements of type ``oid`` (no NULLs); its
    elements follow, each as its length and bytes (see :func:`int_items`, :func:`text_item`)."""
    return struct.pack(">iiiii", 1, 0, oid, length, 1)


def int_items(values: np.ndarray, width: str) -> bytes:
    """Array elements of ``values`` packed at once: ``"q"`` for bigint, ``"i"`` for integer (slice
    the bytes at ``12`` or ``8`` per element to cut several arrays from one call)."""
    items = np.empty(len(values), dtype=np.dtype([("length", ">i4"), ("value", ">i8" if width == "q" else ">i4")]))
    items["length"] = 8 if width == "q" else 4
    items["value"] = values
    return items.tobytes()


#: Pieces of at least this many bytes are copied one slice at a time (a Python step each, ~1 µs);
#: smaller ones by one numpy gather, which builds an index per byte (~10 ns a byte: a SciFact load's
#: 384-d vectors, 3 KB a row, took 10 ms a batch of 256 that way against 0.1 ms as slices).
SLICE_BYTES = 256


def _positions(starts: np.ndarray, lengths: np.ndarray, index: type[np.signedinteger[Any]]) -> np.ndarray:
    """Every byte position of the pieces ``[start, start + length)``, one piece after another."""
    destinations = np.cumsum(lengths) - lengths
    return np.repeat((starts - destinations).astype(index), lengths) + np.arange(int(lengths.sum()), dtype=index)


def gather(buffer: bytes | np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The pieces ``buffer[start:start + length]`` one after another (bytes, as uint8): the small
    pieces in one numpy gather, those of :data:`SLICE_BYTES` or more as slices."""
    data = np.frombuffer(buffer, dtype=np.uint8) if isinstance(buffer, bytes) else buffer.view(np.uint8).ravel()
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    index = np.int32 if max(len(data), total) < 2**31 else np.int64  # half the memory traffic
    large = lengths >= SLICE_BYTES
    if not large.any():
        return data[_positions(starts, lengths, index)]
    destinations = np.cumsum(lengths) - lengths
    out = np.empty(total, dtype=np.uint8)
    small = ~large
    if small.any():
        out[_positions(destinations[small], lengths[small], index)] = data[_positions(starts[small], lengths[small], index)]
    for start, destination, length in zip(
        starts[large].tolist(), destinations[large].tolist(), lengths[large].tolist(), strict=True
    ):
        out[destination : destination + length] = data[start : start + length]
    return out


def interleave(columns: Sequence[tuple[bytes | np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """Rows made of one piece from each column, in order: a column is its bytes, and per row the
    start and length of its piece there. One numpy gather, however many rows (a Python call per
    field and row took most of a batch's client time)."""
    buffers = [np.frombuffer(b, dtype=np.uint8) if isinstance(b, bytes) else b.view(np.uint8).ravel() for b, _, _ in columns]
    offsets = np.cumsum([0] + [len(b) for b in buffers[:-1]])
    starts = np.stack([np.asarray(s, dtype=np.int64) + o for (_, s, _), o in zip(columns, offsets, strict=True)], axis=1)
    lengths = np.stack([np.asarray(n, dtype=np.int64) for _, _, n in columns], axis=1)
    return gather(np.concatenate(buffers), starts.ravel(), lengths.ravel()).tobytes()


def records(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A structured array as an :func:`interleave` column: one record a row."""
    rows = np.arange(len(fields), dtype=np.int64)
    return fields, rows * fields.itemsize, np.full(len(fields), fields.itemsize, dtype=np.int64)


def text_item(value: str) -> bytes:
    """One ``text`` array element."""
    encoded = value.encode()
    return struct.pack(">i", len(encoded)) + encoded


def text_items(values: Sequence[str]) -> tuple[bytes, np.ndarray]:
    """Many ``text`` array elements packed at once (each as :func:`text_item`), and each one's
    length in bytes, header included."""
    encoded = [value.encode() for value in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    heads = lengths.astype(">i4")
    rows = np.arange(len(encoded), dtype=np.int64)
    packed = interleave([(heads, rows * 4, np.full(len(encoded), 4)), (b"".join(encoded), np.cumsum(lengths) - lengths, lengths)])
    return packed, lengths + 4


#: A column of :func:`packed_rows`: its kind (``"bigint"``, ``"integer"``, ``"double"``: an array;
#: ``"bytes"``: each row's field already encoded, as :func:`text` or :func:`jsonb` give it;
#: ``"real[]"``: a float32 matrix, one row's vector per line) and its values.
Column = tuple[str, Any]
_WIDTHS = {"bigint": ">i8", "integer": ">i4", "double": ">f8"}


def packed_rows(count: int, columns: Sequence[Column]) -> bytes:
    """``count`` rows of ``columns`` in COPY's binary row format (the bytes :func:`row` gives
    field by field), in one numpy gather."""
    if not count:
        return b""
    pieces: list[tuple[bytes | np.ndarray, np.ndarray, np.ndarray]] = [
        records(np.full(count, len(columns), dtype=np.dtype([("count", ">i2")])))
    ]
    for kind, values in columns:
        if kind in _WIDTHS:
            fixed = np.empty(count, dtype=np.dtype([("length", ">i4"), ("value", _WIDTHS[kind])]))
            fixed["length"], fixed["value"] = np.dtype(_WIDTHS[kind]).itemsize, values
            pieces.append(records(fixed))
        elif kind == "bytes":
            lengths = np.fromiter(map(len, values), dtype=np.int64, count=count)
            pieces.append(records(lengths.astype(np.dtype([("length", ">i4")]))))
            pieces.append((b"".join(values), np.cumsum(lengths) - lengths, lengths))
        elif kind == "real[]":
            matrix = np.asarray(values, dtype=np.float32).reshape(count, -1)
            dim = matrix.shape[1]
            head = np.empty(count, dtype=np.dtype([("length", ">i4"), ("header", ">i4", 5)]))
            head["length"], head["header"] = 20 + 8 * dim, (1, 0, _FLOAT4_OID, dim, 1)
            items = np.empty(matrix.shape, dtype=_FLOAT4_ITEM)
            items["length"], items["value"] = 4, matrix
            rows = np.arange(count, dtype=np.int64)
            pieces += [records(head), (items, rows * 8 * dim, np.full(count, 8 * dim))]
        else:
            raise ValueError(f"Unknown COPY column kind {kind!r}.")
    return interleave(pieces)
