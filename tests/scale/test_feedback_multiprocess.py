"""Feedback sent to one process right after another process answered succeeds (issue #13, defect 7).

The answering process writes its exchange record in a background batch; before, the process taking
the feedback looked the exchange up once (after flushing only its own queue) and answered 404 for
about half of such posts. It now keeps such feedback pending (202) and every process settles it
once the exchange is stored: no feedback is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from aiestack.stores.open import open_store
from aiestack.testing.cluster import ServerProcess

from ._kit import ADMIN, create_key, start_gateways, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POSTS = 60


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess, pg_url: str, redis_url: str, redis_prefix: str
) -> Iterator[list[ServerProcess]]:
    directory = tmp_path_factory.mktemp("feedback")
    config = write_config(directory, upstream=upstream, store_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    # The answering processes batch their writes as a default install does (every 0.5 s).
    config.write_text(config.read_text().replace("flush_interval_s = 0.05", "flush_interval_s = 0.5"))
    processes = start_gateways(directory, config, 3)
    yield processes
    for process in processes:
        process.stop()


def test_feedback_right_after_an_answer_from_another_process_is_stored(gateways: list[ServerProcess], pg_url: str) -> None:
    key = create_key(gateways[0])
    auth = {"authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, int]:
        answering, judging = gateways[i % 3], gateways[(i + 1) % 3]
        body = {"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}], "temperature": 0.7}
        r = await client.post(f"{answering.url}/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        exchange_id = r.headers["x-aiestack-exchange-id"]
        fb = await client.post(f"{judging.url}/v1/feedback", headers=auth, json={"exchange_id": exchange_id, "thumbs": "up"})
        return exchange_id, fb.status_code

    async def run() -> list[tuple[str, int]]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(one(client, i) for i in range(POSTS)))

    sent = asyncio.run(run())
    assert {code for _, code in sent} <= {201, 202}, sent  # stored at once, or pending until the write lands
    store = open_store(pg_url, "exchanges")
    try:
        ids = {exchange_id for exchange_id, _ in sent}
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a latency claim
        while True:
            stored = {f.exchange_id for f in store.list_feedback(limit=10 * POSTS)} & ids  # type: ignore[attr-defined]
            if stored == ids or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(ids) == POSTS and stored == ids  # 0 feedback lost
        assert store.list_pending_feedback() == []  # type: ignore[attr-defined]
    finally:
        store.close()
    # And a malformed id is still a 404.
    r = httpx.post(f"{gateways[0].url}/v1/feedback", headers=ADMIN, json={"exchange_id": "ex_nope", "thumbs": "up"}, timeout=30)
    assert r.status_code == 404
