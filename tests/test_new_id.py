"""Exchange ids: random version-4 UUIDs from a pooled read of the OS's random bytes, never repeated."""

from __future__ import annotations

import os
import uuid

import pytest

from aiestack.types import new_id

pytestmark = pytest.mark.unit


def test_ids_are_prefixed_version_4_uuids_and_never_repeat_across_pool_refills() -> None:
    ids = [new_id("ex") for _ in range(1000)]  # about four pools' worth
    assert len(set(ids)) == len(ids)
    for value in ids[:300]:
        prefix, _, hexed = value.partition("_")
        parsed = uuid.UUID(hex=hexed)
        assert prefix == "ex" and len(hexed) == 32 and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_hands_out_the_ids_its_parent_will() -> None:
    new_id()  # the pool holds bytes the parent has not used yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then leave at once
        os.close(read)
        os.write(write, " ".join(new_id() for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(20)}
    assert len(child) == 20 and not child & parent
