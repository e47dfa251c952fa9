"""Pending feedback: explicit feedback sent before its exchange was stored, settled once it is.

Feedback is often sent right after the answer. With several processes on one store
(``serve --workers N``, or several hosts) the process taking the feedback may not have the
exchange yet: the answering process writes it in its next batch. ``POST /v1/feedback`` then keeps
the feedback as a :class:`~aiestack.stores.feedback.PendingFeedback` (validated and masked, with the
submitting key's tenant) and answers 202; every server process runs :func:`settle_forever`, which
calls :func:`settle_pending` each store flush interval:

- the exchange is stored and belongs to the submitting key's tenant (any tenant for the admin
  key): the item becomes a feedback record with the item's id and time (``stored``);
- the exchange is stored but belongs to another tenant: the item is dropped (``dropped_tenant``);
- the exchange is still unknown after :data:`PENDING_MAX_AGE_S`: the item is dropped
  (``dropped_expired``);
- otherwise it waits for the next round.

Each drop is logged with its reason and counted (``aiestack_pending_feedback{outcome}``). Settling
is idempotent (a record keeps the item's id), so processes settling the same item at once store it
once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiestack.feedback.explicit import feedback_on
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import FeedbackRecord, PendingFeedbackStore

_log = logging.getLogger(__name__)

#: How long pending feedback waits for its exchange (seconds). A write batch lands within
#: ``store.flush_interval_s`` of the answer; ten minutes also covers a store that was briefly down.
PENDING_MAX_AGE_S = 600.0
#: The most items one round settles (the oldest first).
SETTLE_BATCH = 1000


class _Store(PendingFeedbackStore, Protocol):
    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None: ...


@dataclass(frozen=True, slots=True)
class Settled:
    """What one :func:`settle_pending` round did, in items."""

    stored: int = 0
    dropped_tenant: int = 0
    dropped_expired: int = 0
    waiting: int = 0


def settle_pending(store: _Store, *, now: float | None = None, max_age_s: float = PENDING_MAX_AGE_S) -> Settled:
    """One round: store the pending feedback whose exchange is there, drop what cannot be stored."""
    now = time.time() if now is None else now
    records: list[FeedbackRecord] = []
    drop: list[str] = []
    tenant_drops = expired = waiting = 0
    for item in store.list_pending_feedback(limit=SETTLE_BATCH):
        exchange = store.get_exchange(item.exchange_id)
        if exchange is not None and (item.tenant is None or item.tenant == exchange.tenant):
            records.append(feedback_on(exchange, item.body, id=item.id, created_at=item.created_at, key_id=item.key_id))
        elif exchange is not None:
            tenant_drops += 1
            drop.append(item.id)
            _log.warning(
                "Dropped pending feedback %s: exchange %s belongs to another tenant than key %s's.",
                item.id, item.exchange_id, item.key_id,
            )
        elif now - item.created_at > max_age_s:
            expired += 1
            drop.append(item.id)
            _log.warning(
                "Dropped pending feedback %s: exchange %s was not stored within %.0f s.",
                item.id, item.exchange_id, max_age_s,
            )
        else:
            waiting += 1
    store.settle_pending_feedback(records, drop)
    return Settled(stored=len(records), dropped_tenant=tenant_drops, dropped_expired=expired, waiting=waiting)


async def settle_forever(
    store: _Store,
    *,
    interval_s: float,
    count: Callable[[str, int], None],
    max_age_s: float = PENDING_MAX_AGE_S,
) -> None:
    """Run :func:`settle_pending` every ``interval_s`` until cancelled; ``count(outcome, n)`` counts.

    A failing round (the store is down) is logged and retried in the next one: the items stay stored.
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            settled = await asyncio.to_thread(settle_pending, store, max_age_s=max_age_s)
        except Exception:  # the store is failing: the items are still there for the next round
            _log.exception("Settling pending feedback failed; retrying in %.2f s.", interval_s)
            continue
        for outcome in ("stored", "dropped_tenant", "dropped_expired"):
            n = getattr(settled, outcome)
            if n:
                count(outcome, n)
