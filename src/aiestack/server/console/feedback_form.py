"""Feedback in the console: what an exchange received, and the form that gives more.

Reads and writes go through the :class:`~aiestack.stores.feedback.FeedbackStore` protocol, so any
store that implements it works; one that does not shows no feedback (and no form) rather than
failing. A record given here is built by the feedback wing exactly as ``POST /v1/feedback``
builds it (explicit, ``value`` normalised to [0, 1], the exchange's route and prompt version
copied onto it), with ``user = "console"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiestack.errors import InvalidRequest
from aiestack.feedback.explicit import explicit_feedback
from aiestack.stores.base import ExchangeRecord, ExchangeStore
from aiestack.stores.feedback import FeedbackRate, FeedbackRecord, FeedbackStore


def feedback_of(store: ExchangeStore, exchange_ids: Sequence[str]) -> dict[str, FeedbackRate]:
    """Feedback totals per exchange id (those with any), or nothing if the store keeps no feedback."""
    if not exchange_ids or not isinstance(store, FeedbackStore):
        return {}
    return store.feedback_counts(list(exchange_ids))


def feedback_list(store: ExchangeStore, exchange_id: str) -> list[FeedbackRecord] | None:
    """The exchange's feedback, newest first; ``None`` if the store keeps no feedback."""
    if not isinstance(store, FeedbackStore):
        return None
    return store.list_feedback(exchange_id=exchange_id, limit=200)


def record_from_form(
    fields: Mapping[str, str], exchange: ExchangeRecord, *, redact: Callable[[str], str] | None = None
) -> FeedbackRecord:
    """The feedback the exchange page's form gives, made by the feedback wing (as ``POST /v1/feedback`` does).

    Raises :class:`~aiestack.errors.InvalidRequest` for a form that says nothing or is out of range.
    """
    thumbs = fields.get("thumbs", "").strip()
    if thumbs not in ("", "up", "down"):
        raise InvalidRequest("Thumbs must be up or down.", hint="Pick thumbs up or down, or leave both unset.")
    rating_text = fields.get("rating", "").strip()
    if rating_text and not rating_text.isdigit():
        raise InvalidRequest("A rating is a whole number from 1 to 5.", hint="Pick a rating from the list.")
    return explicit_feedback(
        exchange,
        thumbs=thumbs or None,  # type: ignore[arg-type]
        rating=int(rating_text) if rating_text else None,
        comment=fields.get("comment") or None,
        correction=fields.get("correction") or None,
        tags=fields.get("tags", "").split(","),
        user="console",
        redact=redact,
    )
