"""The on-disk form of an embedding: float32, little-endian, 4 bytes a dimension.

float32 is the precision embedding models compute in, so nothing is lost, and the bytes are
identical on every machine and backend (the memory store uses the same rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOAT32_LE = np.dtype("<f4")


def pack(vector: Sequence[float]) -> bytes:
    """The vector as float32 little-endian bytes."""
    array = np.asarray(vector, dtype=FLOAT32_LE)
    if array.ndim != 1:
        raise ValueError(f"an embedding must be a flat sequence of numbers, got shape {array.shape}")
    return array.tobytes()


def unpack(blob: bytes, dim: int) -> list[float]:
    """The vector back as Python floats (each exactly the stored float32 value)."""
    array = np.frombuffer(blob, dtype=FLOAT32_LE)
    if array.size != dim:
        raise ValueError(f"a stored embedding has {array.size} values but its row says dim={dim}")
    return list(array.tolist())
