"""Feedback sent to one process right after another process answered succeeds (issue #13, defect 7).

The answering process writes its exchange record in a background batch; before, the process taking
the feedback looked the exchange up once (after flushing only its own queue) and answered 404 for
about half of such posts. It now waits, bounded, for the other process's next flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

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


def test_feedback_right_after_an_answer_from_another_process_is_stored(gateways: list[ServerProcess]) -> None:
    key = create_key(gateways[0])
    auth = {"authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, i: int) -> int:
        answering, judging = gateways[i % 3], gateways[(i + 1) % 3]
        body = {"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}], "temperature": 0.7}
        r = await client.post(f"{answering.url}/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        fb = await client.post(f"{judging.url}/v1/feedback", headers=auth,
                               json={"exchange_id": r.headers["x-aiestack-exchange-id"], "thumbs": "up"})
        return fb.status_code

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(one(client, i) for i in range(POSTS)))

    codes = asyncio.run(run())
    assert codes == [201] * POSTS
    # And an id no process ever made is still a 404 (after the bounded wait).
    r = httpx.post(f"{gateways[0].url}/v1/feedback", headers=ADMIN, json={"exchange_id": "ex_" + "0" * 32, "thumbs": "up"}, timeout=30)
    assert r.status_code == 404
