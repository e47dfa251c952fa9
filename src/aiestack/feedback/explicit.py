"""Explicit feedback: what a user says about one answer (thumbs, rating, score, comment, correction).

:func:`explicit_feedback` turns what a client sent into a :class:`FeedbackRecord`, normalising the
judgement to ``value`` in [0, 1] and copying the exchange's route and prompt version into it
(so rates by route and prompt version need no join). The HTTP face is ``POST /v1/feedback``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from aiestack.errors import InvalidRequest
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import FeedbackRecord
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR
from aiestack.types import new_id

Thumbs = Literal["up", "down"] | int


def thumbs_value(thumbs: Thumbs | None) -> int | None:
    """``"up"``/``1``/``+1`` → 1, ``"down"``/``-1`` → -1; anything else is an :class:`InvalidRequest`."""
    if thumbs is None:
        return None
    if thumbs in ("up", 1):
        return 1
    if thumbs in ("down", -1):
        return -1
    raise InvalidRequest(f"thumbs must be 'up', 'down', 1 or -1, got {thumbs!r}.", hint="Send thumbs: \"up\" or \"down\".")


def normalised_value(thumbs: int | None, rating: int | None, score: float | None) -> float | None:
    """The judgement in [0, 1]: a score as given, else a rating r of 5 as (r-1)/4, else thumbs as 0/1."""
    if score is not None:
        return float(score)
    if rating is not None:
        return (rating - 1) / 4
    if thumbs is not None:
        return 1.0 if thumbs > 0 else 0.0
    return None


def judgement(
    *,
    thumbs: Thumbs | None = None,
    rating: int | None = None,
    score: float | None = None,
    comment: str | None = None,
    correction: str | None = None,
    tags: Sequence[str] = (),
    user: str | None = None,
    redact: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """What a client sent, validated, normalised and masked: the exchange-independent part of a record.

    :class:`InvalidRequest` if it says nothing or is out of range. ``redact`` (the stack's trace
    redactor) masks PII and secrets in the text a person wrote: the comment, the correction, the
    tags and the user id. The result is JSON (it is what pending feedback keeps).
    """
    up_down = thumbs_value(thumbs)
    if rating is not None and not 1 <= rating <= 5:
        raise InvalidRequest(f"rating must be 1 to 5, got {rating}.", hint="Send an integer rating from 1 to 5.")
    if score is not None and not 0.0 <= score <= 1.0:
        raise InvalidRequest(f"score must be between 0 and 1, got {score}.", hint="Send a score in [0, 1].")
    comment = comment.strip() if comment and comment.strip() else None
    correction = correction if correction and correction.strip() else None
    given = {"thumbs": up_down, "rating": rating, "score": score, "correction": correction, "comment": comment}
    kind = next((k for k, v in given.items() if v is not None), None)
    if kind is None:
        raise InvalidRequest(
            "The feedback says nothing.",
            hint="Send at least one of thumbs, rating, score, comment or correction.",
        )
    if redact is not None:
        comment = redact(comment) if comment else comment
        correction = redact(correction) if correction else correction
        user = redact(user) if user else user
        tags = [redact(t) for t in tags]
    return {
        "kind": kind,
        "value": normalised_value(up_down, rating, score),
        "thumbs": up_down,
        "rating": rating,
        "score": score,
        "comment": comment,
        "correction": correction,
        "user": user,
        "tags": list(dict.fromkeys(t.strip() for t in tags if t.strip())),
    }


def feedback_on(
    exchange: ExchangeRecord, judged: Mapping[str, Any], *, id: str, created_at: float, key_id: str | None
) -> FeedbackRecord:
    """The feedback record of a :func:`judgement` on ``exchange`` (its tenant, route and prompt version)."""
    version = exchange.attributes.get(PROMPT_VERSION_ATTR)
    return FeedbackRecord(
        id=id,
        exchange_id=exchange.id,
        created_at=created_at,
        kind=judged["kind"],
        source="explicit",
        tenant=exchange.tenant,
        key_id=key_id,
        user=judged.get("user"),
        route=exchange.route,
        prompt=exchange.attributes.get(PROMPT_NAME_ATTR),
        prompt_version=version if isinstance(version, int) else None,
        value=judged.get("value"),
        thumbs=judged.get("thumbs"),
        rating=judged.get("rating"),
        score=judged.get("score"),
        comment=judged.get("comment"),
        correction=judged.get("correction"),
        tags=tuple(judged.get("tags") or ()),
    )


def explicit_feedback(
    exchange: ExchangeRecord,
    *,
    thumbs: Thumbs | None = None,
    rating: int | None = None,
    score: float | None = None,
    comment: str | None = None,
    correction: str | None = None,
    tags: Sequence[str] = (),
    user: str | None = None,
    key_id: str | None = None,
    now: float | None = None,
    redact: Callable[[str], str] | None = None,
) -> FeedbackRecord:
    """A feedback record on ``exchange``; :class:`InvalidRequest` if it says nothing or is out of range.

    ``redact`` masks the text a person wrote, as in :func:`judgement`.
    """
    judged = judgement(
        thumbs=thumbs, rating=rating, score=score, comment=comment, correction=correction, tags=tags, user=user,
        redact=redact,
    )
    created_at = time.time() if now is None else now
    return feedback_on(exchange, judged, id=new_id("fb"), created_at=created_at, key_id=key_id)
