"""The FeedbackStore protocol: user feedback on exchanges, and the conversation turns that implicit
signals are detected from.

Every backend (SQL, memory) implements it and passes
:class:`aiestack.testing.feedback_conformance.FeedbackStoreConformance`.

**Feedback** (:class:`FeedbackRecord`) is one judgement of one exchange, explicit (a user pressed
thumbs up, gave a rating, wrote a correction: ``POST /v1/feedback``) or implicit (the feedback
wing inferred it from the conversation: a regeneration, an edited resend, a stream the client
stopped early, a "that's wrong" follow-up). ``value`` is the judgement normalised to ``[0, 1]``
(thumbs down 0, up 1; rating r of 5 → (r-1)/4; score as given; implicit signals 0), so rates can
be averaged across kinds. ``route``, ``prompt`` and ``prompt_version`` are copied from the
exchange when the feedback is written, so rates by route and prompt version are one indexed
query (no JSON, no join).

**Conversation turns** (:class:`TurnRecord`) are the hashes the implicit-signal detector needs:
for each answered exchange, the hash of the conversation before its last user message
(``conversation``) and of that conversation plus the last user message (``turn``), both salted
with tenant, key and user. They hold no content, so signals work without content tracing.

For the console (a read-only user of this module):

- the feedback page lists :meth:`FeedbackStore.list_feedback` (newest first, filters, paging
  with ``before``) and draws :meth:`FeedbackStore.feedback_summary` grouped by ``("route",)``,
  ``("prompt", "prompt_version")`` or ``("day",)``;
- the exchange detail page shows ``list_feedback(exchange_id=...)``;
- the exchange list's feedback column can use ``feedback_counts(exchange_ids)``.

**Pending feedback** (:class:`PendingFeedback`, :class:`PendingFeedbackStore`) is explicit feedback
on an exchange that was not stored yet when it was sent (another process answered and still holds
the record in its write batch). It is kept, already validated and masked, until the exchange lands
and :func:`aiestack.feedback.pending.settle_pending` turns it into a :class:`FeedbackRecord` (or
drops it: another tenant's exchange, or too old).

Methods are synchronous, like the other stores; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FeedbackSource = Literal["explicit", "implicit"]

#: What an explicit feedback record holds (a record may hold several: thumbs and a comment).
EXPLICIT_KINDS = ("thumbs", "rating", "score", "comment", "correction")
#: The implicit signals the feedback wing detects; an implicit record's ``kind`` is one of them.
SIGNALS = ("regenerated", "edited", "stopped_early", "complaint")

FeedbackGroup = Literal["route", "prompt", "prompt_version", "source", "kind", "tenant", "day"]
FEEDBACK_GROUPS: tuple[FeedbackGroup, ...] = ("route", "prompt", "prompt_version", "source", "kind", "tenant", "day")


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One judgement of one exchange, as stored.

    ``kind`` is the main thing given: for explicit feedback the first of ``thumbs``, ``rating``,
    ``score``, ``correction``, ``comment`` present; for implicit feedback the signal
    (``regenerated``, ``edited``, ``stopped_early``, ``complaint``). ``thumbs`` is +1 or -1,
    ``rating`` 1-5, ``score`` 0-1, ``value`` the normalised judgement (``None`` for a comment
    or correction alone). ``detail`` holds what a signal was inferred from (e.g. the id of the
    exchange that regenerated this one, the phrase of a complaint).
    """

    id: str
    exchange_id: str
    created_at: float  # epoch seconds
    kind: str
    source: FeedbackSource = "explicit"
    tenant: str = "default"
    key_id: str | None = None
    user: str | None = None
    route: str | None = None
    prompt: str | None = None
    prompt_version: int | None = None
    value: float | None = None
    thumbs: int | None = None
    rating: int | None = None
    score: float | None = None
    comment: str | None = None
    correction: str | None = None
    tags: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeedbackRate:
    """Feedback totals of one group; a field not grouped by is ``None``.

    ``count`` records; ``positive`` those with ``value >= 0.5``, ``negative`` those with
    ``value < 0.5``; ``mean_value`` the mean of known values (``None`` if none);
    ``corrections`` records with a correction; ``implicit`` records with source ``implicit``.
    ``positive_rate`` is ``positive / (positive + negative)``.
    """

    count: int
    positive: int
    negative: int
    mean_value: float | None
    corrections: int
    implicit: int
    route: str | None = None
    prompt: str | None = None
    prompt_version: int | None = None
    source: str | None = None
    kind: str | None = None
    tenant: str | None = None
    day: str | None = None

    @property
    def positive_rate(self) -> float | None:
        judged = self.positive + self.negative
        return self.positive / judged if judged else None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One answered exchange's place in its conversation (hashes only; see the module docstring).

    ``conversation``: hash of (tenant, key, user, every message before the last user message);
    ``turn``: hash of (``conversation``, the last user message). ``answer`` is a hash of the
    assistant's answer (``None`` when unknown), so a follow-up can be matched to the answer it
    follows.
    """

    exchange_id: str
    conversation: str
    turn: str
    created_at: float
    tenant: str = "default"
    route: str | None = None
    prompt: str | None = None
    prompt_version: int | None = None
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class PendingFeedback:
    """Explicit feedback waiting for its exchange to be stored.

    ``tenant`` is the submitting key's tenant (``None`` for the admin key, which may judge any
    exchange); the feedback is kept only if the exchange turns out to be that tenant's. ``body``
    holds the validated, masked judgement (:func:`aiestack.feedback.explicit.judgement`); the stored
    feedback record gets this item's ``id`` and ``created_at``.
    """

    id: str
    exchange_id: str
    created_at: float  # epoch seconds
    tenant: str | None
    key_id: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class PendingFeedbackStore(Protocol):
    """Pending feedback (implemented by the exchange stores that hold feedback)."""

    def write_pending_feedback(self, items: Sequence[PendingFeedback]) -> None:
        """Insert items; an item whose id exists replaces the old one."""
        ...

    def list_pending_feedback(self, *, limit: int = 1000) -> list[PendingFeedback]:
        """The oldest ``limit`` items (``(created_at, id)`` ascending)."""
        ...

    def settle_pending_feedback(self, records: Sequence[FeedbackRecord], drop: Sequence[str]) -> None:
        """In one transaction: write ``records`` (as :meth:`FeedbackStore.write_feedback`) and delete the
        pending items whose ids are the records' ids or in ``drop``. Settling twice is harmless."""
        ...


@runtime_checkable
class FeedbackStore(Protocol):
    """Feedback records and conversation turns (implemented by the exchange stores)."""

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Insert records; a record whose id exists replaces the old one (idempotent retries)."""
        ...

    def get_feedback(self, feedback_id: str) -> FeedbackRecord | None: ...

    def list_feedback(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        exchange_id: str | None = None,
        tenant: str | None = None,
        route: str | None = None,
        prompt: str | None = None,
        prompt_version: int | None = None,
        source: FeedbackSource | None = None,
        kind: str | None = None,
        since: float | None = None,
    ) -> list[FeedbackRecord]:
        """Newest first (``(created_at, id)`` descending); ``before`` (exclusive) pages backwards,
        ``since`` (inclusive) bounds the oldest. Every filter given must match."""
        ...

    def feedback_summary(
        self,
        *,
        by: Sequence[FeedbackGroup] = ("route",),
        since: float | None = None,
        until: float | None = None,
        tenant: str | None = None,
        source: FeedbackSource | None = None,
    ) -> list[FeedbackRate]:
        """Rates grouped by ``by`` (in that order, ``None`` first) over records with
        ``since <= created_at < until``; ``by=()`` gives one total row (none for no records).
        ``day`` is the UTC date ``YYYY-MM-DD``. Raises ``ValueError`` for an unknown group."""
        ...

    def feedback_counts(self, exchange_ids: Sequence[str]) -> dict[str, FeedbackRate]:
        """Per exchange id (only those with feedback): its feedback totals (group fields ``None``)."""
        ...

    def write_turns(self, turns: Sequence[TurnRecord]) -> None:
        """Insert turns; a turn whose exchange id exists replaces the old one."""
        ...

    def find_turns(
        self,
        *,
        conversation: str | None = None,
        turn: str | None = None,
        since: float | None = None,
        limit: int = 10,
    ) -> list[TurnRecord]:
        """Turns with this ``conversation`` and/or ``turn`` hash (at least one is needed),
        created at or after ``since``, newest first."""
        ...

    def prune_turns(self, before: float) -> int:
        """Delete turns created before ``before`` (they can no longer match); returns how many."""
        ...


def check_feedback_groups(by: Sequence[str]) -> tuple[FeedbackGroup, ...]:
    """``by`` validated (each a known group, none twice), in the caller's order."""
    known: dict[str, FeedbackGroup] = {g: g for g in FEEDBACK_GROUPS}
    unknown = [g for g in by if g not in known]
    if unknown:
        raise ValueError(f"unknown feedback group(s) {unknown}; group by any of {', '.join(FEEDBACK_GROUPS)}")
    if len(set(by)) != len(by):
        raise ValueError(f"feedback groups must not repeat, got {list(by)}")
    return tuple(known[g] for g in by)


def sort_rates(rows: Sequence[FeedbackRate], groups: Sequence[FeedbackGroup]) -> list[FeedbackRate]:
    """``rows`` ordered by their group values in turn, ``None`` first (the same on every backend)."""

    def key(row: FeedbackRate) -> tuple[tuple[bool, str, float], ...]:
        out = []
        for g in groups:
            v = getattr(row, g)
            out.append((v is not None, v if isinstance(v, str) else "", float(v) if isinstance(v, int) else 0.0))
        return tuple(out)

    return sorted(rows, key=key)


def rate_from_values(values: Sequence[tuple[float | None, bool, bool]], **groups: Any) -> FeedbackRate:
    """A :class:`FeedbackRate` from ``(value, has_correction, implicit)`` triples (memory backend, tests)."""
    known = [v for v, _, _ in values if v is not None]
    return FeedbackRate(
        count=len(values),
        positive=sum(1 for v in known if v >= 0.5),
        negative=sum(1 for v in known if v < 0.5),
        mean_value=sum(known) / len(known) if known else None,
        corrections=sum(1 for _, c, _ in values if c),
        implicit=sum(1 for _, _, i in values if i),
        **groups,
    )
