"""What a guard is: a detector that reads text and reports findings, and the verdict it leads to.

A *detector* (PII, secrets, injection, canary, banned terms, ...) only finds things: it returns
:class:`~aiestack.types.Finding` values with a kind, a span and a score, never the matched text.
The *policy* (:mod:`aiestack.guardrails.policy`) says what happens when it finds something: block
the request, redact the span, flag the exchange (monitor only), retry the generation, or nothing.
A :class:`~aiestack.types.Verdict` records both: the guard's name, the action taken, the findings,
the time the check took and a score.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

from aiestack.types import Action, Finding, Verdict

#: What a policy may ask of a guard. ``retry`` applies to output guards (re-ask the model).
GuardAction = Literal["block", "redact", "flag", "retry", "off"]

#: The action shown in ``x-aiestack-guard`` for a check that found nothing.
PASS = "pass"


@runtime_checkable
class Detector(Protocol):
    """Finds spans of one family of things in a text. Fast and synchronous; no I/O."""

    name: str

    def detect(self, text: str) -> list[Finding]: ...


def verdict(
    guard: str,
    action: Action,
    findings: Iterable[Finding] = (),
    *,
    started: float,
    score: float | None = None,
) -> Verdict:
    """A verdict whose latency is measured from ``started`` (a :func:`time.perf_counter` value)."""
    found = tuple(findings)
    if score is None and found:
        scores = [f.score for f in found if f.score is not None]
        score = max(scores) if scores else None
    return Verdict(guard, action, found, (time.perf_counter() - started) * 1000, score)


def header_value(verdicts: Sequence[Verdict]) -> str:
    """``pii:redact,injection:pass``: each guard once, with its strongest action.

    ``allow`` shows as ``pass``, and as ``retry`` when the check passed after re-asking the model.
    """
    rank = {"block": 4, "redact": 3, "retry": 2, "flag": 1, "allow": 0}
    best: dict[str, str] = {}
    for v in verdicts:
        action: str = v.action
        if action == "allow" and any(f.kind.endswith(".retried") for f in v.findings):
            action = "retry"  # passed after re-asking the model
        current = best.get(v.guard)
        if current is None or rank[action] > rank[current]:
            best[v.guard] = action
    return ",".join(f"{g}:{PASS if a == 'allow' else a}" for g, a in best.items())


def holds_one(text: str, needles: Sequence[str]) -> bool:
    """Whether ``text`` holds one of ``needles``: the cheap test that lets a detector skip a pattern
    none of whose matches can lack them (a loop: ``any`` over a generator or a ``map`` costs more)."""
    for needle in needles:
        if needle in text:
            break
    else:
        return False
    return True


def without_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Findings sorted by start, dropping any that overlaps an earlier, longer (or higher-scored) one."""
    spans = sorted(
        (f for f in findings if f.start is not None and f.end is not None),
        key=lambda f: (f.start or 0, -((f.end or 0) - (f.start or 0))),
    )
    kept: list[Finding] = []
    for f in spans:
        if kept and (f.start or 0) < (kept[-1].end or 0):
            continue
        kept.append(f)
    return kept


_V = TypeVar("_V")


class Recent(Generic[_V]):
    """What a check gave for texts seen recently, bounded in entries and in the length of a text kept.

    A conversation is sent again at each turn (an agent's at each step), so the same messages are
    checked again and again; a guard remembers their results instead of scanning them anew. Only
    deterministic results belong here. Safe to share between threads (plain dict operations).
    """

    def __init__(self, entries: int = 1024, max_chars: int = 8192) -> None:
        self._entries = entries
        self._max_chars = max_chars
        self._seen: dict[object, _V] = {}

    def get(self, key: object) -> _V | None:
        return self._seen.get(key)

    def put(self, key: object, text: str, value: _V) -> _V:
        """Remember ``value`` for ``key`` (whose text is ``text``) when ``text`` is short enough."""
        if len(text) <= self._max_chars:
            if len(self._seen) >= self._entries:
                self._seen.clear()
            self._seen[key] = value
        return value
