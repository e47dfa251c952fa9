"""The Trace stage records guard verdicts and retrieved chunks for the console (issue #7).

Verdicts are recorded without content; a chunk's text only with content tracing (redacted); the
strongest guard action goes to its own indexed column.
"""

from __future__ import annotations

import dataclasses

import pytest

from aiestack.pipeline import Next
from aiestack.types import Chunk, Exchange, Finding, Hit, Verdict

from .test_trace_stage import SECRET, Rig, _ex, _redact

pytestmark = pytest.mark.unit

HITS = (
    Hit(Chunk("c1", "doc-a", f"mail {SECRET} for help", position=3), 0.91, "hybrid"),
    Hit(Chunk("c2", "doc-b", "second chunk", position=0), 0.42, "term"),
)


class Context:
    """A stand-in for the RAG and guard stages: adds hits and verdicts on the way in."""

    name = "context"

    def __init__(self, verdicts: tuple[Verdict, ...]) -> None:
        self.verdicts = verdicts

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        return await call_next(dataclasses.replace(ex, hits=HITS, verdicts=self.verdicts))


VERDICTS = (
    Verdict("pii", "redact", (Finding("EMAIL", 9, 26, label="EMAIL_1"),), latency_ms=0.4),
    Verdict("injection", "allow", score=0.02, latency_ms=1.5),
    Verdict("topics", "flag", (Finding("banned_topic", label="weather"),)),
)


async def test_verdicts_and_hits_are_recorded_without_content_by_default() -> None:
    rig = Rig()
    await rig.pipeline(Context(VERDICTS))(_ex())
    record = rig.sink.record
    assert record.guard_action == "redact"  # redact outranks flag; allow is no action
    assert record.attributes["verdicts"] == [
        {
            "guard": "pii",
            "action": "redact",
            "score": None,
            "latency_ms": 0.4,
            "findings": [{"kind": "EMAIL", "label": "EMAIL_1", "start": 9, "end": 26, "score": None}],
        },
        {"guard": "injection", "action": "allow", "score": 0.02, "latency_ms": 1.5, "findings": []},
        {
            "guard": "topics",
            "action": "flag",
            "score": None,
            "latency_ms": 0.0,
            "findings": [{"kind": "banned_topic", "label": "weather", "start": None, "end": None, "score": None}],
        },
    ]
    assert record.attributes["hits"] == [
        {"chunk_id": "c1", "document_id": "doc-a", "position": 3, "score": 0.91, "retriever": "hybrid"},
        {"chunk_id": "c2", "document_id": "doc-b", "position": 0, "score": 0.42, "retriever": "term"},
    ]
    assert SECRET not in repr(record)
    rig.tracing.shutdown()


async def test_chunk_text_is_kept_redacted_with_content_tracing() -> None:
    rig = Rig(content=True, redact=_redact)
    await rig.pipeline(Context(VERDICTS))(_ex())
    hits = rig.sink.record.attributes["hits"]
    assert [h["text"] for h in hits] == ["mail [EMAIL] for help", "second chunk"]
    rig.tracing.shutdown()


@pytest.mark.parametrize(
    ("actions", "strongest"),
    [((), None), (("allow",), None), (("flag", "allow"), "flag"), (("flag", "block", "redact"), "block")],
)
async def test_the_strongest_action_is_the_column(actions: tuple[str, ...], strongest: str | None) -> None:
    rig = Rig()
    verdicts = tuple(Verdict(f"g{i}", a) for i, a in enumerate(actions))  # type: ignore[arg-type]
    await rig.pipeline(Context(verdicts))(_ex())
    assert rig.sink.record.guard_action == strongest
    assert ("verdicts" in rig.sink.record.attributes) == bool(actions)
    rig.tracing.shutdown()
