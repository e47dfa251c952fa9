"""Pending feedback (issue #13, defect 7): feedback sent before its exchange was stored is settled
into real feedback once the exchange lands; another tenant's exchange and an exchange that never
comes drop it, with a logged reason."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aiestack.feedback.explicit import judgement
from aiestack.feedback.pending import Settled, settle_forever, settle_pending
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.feedback import PendingFeedback
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR

pytestmark = pytest.mark.unit

T0 = 1_750_000_000.0
EX_ID = "ex_" + "a" * 32


def exchange(tenant: str = "acme", exchange_id: str = EX_ID) -> ExchangeRecord:
    return ExchangeRecord(
        id=exchange_id, created_at=T0, model="m", outcome="ok", tenant=tenant, route="help",
        attributes={PROMPT_NAME_ATTR: "support", PROMPT_VERSION_ATTR: 4},
    )


def item(item_id: str = "fb_1", *, tenant: str | None = "acme", at: float = T0, exchange_id: str = EX_ID) -> PendingFeedback:
    body = judgement(thumbs="down", correction="Paris.", tags=["geo"])
    return PendingFeedback(id=item_id, exchange_id=exchange_id, created_at=at, tenant=tenant, key_id="key_1", body=body)


def test_feedback_sent_before_the_exchange_is_stored_once_the_write_lands() -> None:
    store = MemoryExchangeStore()
    store.write_pending_feedback([item()])  # the feedback arrived first (the answer is in another process's batch)
    assert settle_pending(store, now=T0 + 1) == Settled(waiting=1)
    assert store.list_feedback() == []
    store.write_exchanges([exchange()])  # the other process's batch lands
    assert settle_pending(store, now=T0 + 2) == Settled(stored=1)
    (record,) = store.list_feedback(exchange_id=EX_ID)
    assert (record.id, record.created_at, record.key_id, record.source) == ("fb_1", T0, "key_1", "explicit")
    assert (record.tenant, record.route, record.prompt, record.prompt_version) == ("acme", "help", "support", 4)
    assert (record.kind, record.thumbs, record.value, record.correction, record.tags) == ("thumbs", -1, 0.0, "Paris.", ("geo",))
    assert store.list_pending_feedback() == []
    assert settle_pending(store, now=T0 + 3) == Settled()  # nothing left; settling again stores nothing twice
    assert len(store.list_feedback()) == 1


def test_another_tenants_exchange_drops_the_item_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryExchangeStore()
    store.write_exchanges([exchange(tenant="globex")])
    admin = item("fb_2", tenant=None)  # the admin key may judge any tenant's exchange
    store.write_pending_feedback([item("fb_1", tenant="acme"), admin])
    with caplog.at_level(logging.WARNING, logger="aiestack.feedback.pending"):
        assert settle_pending(store, now=T0 + 1) == Settled(stored=1, dropped_tenant=1)
    assert [(f.id, f.tenant) for f in store.list_feedback()] == [("fb_2", "globex")]
    assert store.list_pending_feedback() == []
    assert "fb_1" in caplog.text and "another tenant" in caplog.text


def test_an_exchange_that_never_comes_expires_the_item(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryExchangeStore()
    store.write_pending_feedback([item("fb_old", at=T0), item("fb_new", at=T0 + 50)])
    with caplog.at_level(logging.WARNING, logger="aiestack.feedback.pending"):
        assert settle_pending(store, now=T0 + 100, max_age_s=60) == Settled(dropped_expired=1, waiting=1)
    assert [i.id for i in store.list_pending_feedback()] == ["fb_new"]
    assert "fb_old" in caplog.text and "not stored within 60 s" in caplog.text
    assert store.list_feedback() == []


def test_settle_forever_counts_outcomes_until_cancelled() -> None:
    store = MemoryExchangeStore()
    store.write_exchanges([exchange(), exchange(tenant="globex", exchange_id="ex_" + "b" * 32)])
    store.write_pending_feedback([item("fb_1"), item("fb_2", exchange_id="ex_" + "b" * 32)])
    counted: list[tuple[str, int]] = []

    async def run() -> None:
        task = asyncio.create_task(settle_forever(store, interval_s=0.01, count=lambda o, n: counted.append((o, n))))
        for _ in range(500):
            if counted:  # one round settled both items and counted them
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert sorted(counted) == [("dropped_tenant", 1), ("stored", 1)]
    assert [f.id for f in store.list_feedback()] == ["fb_1"]
