"""A USD budget holds across three gateway processes sharing Redis (issue #13, defect 8).

Before, each process checked "spend < budget" and added the cost afterwards, so 30 concurrent calls
on a $5/day key all passed the check and spent $6 or more. Now each call reserves its estimated
cost atomically before it runs (and settles to the real cost after): the calls admitted are exactly
those the budget can pay for, however the load is spread over the processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from aiestack.testing.cluster import ServerProcess

from ._kit import ADMIN, create_key, start_gateways, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROCESSES = 3
#: $0.50 per output token, inputs free: an answer of the fake upstream to "q<i>" is 3 tokens, $1.50,
#: and with max_tokens = 3 the estimate is exactly the cost. A $5 budget pays for 3 such calls.
PRICING = """
[pricing."up-general"]
input_per_mtok = 0
output_per_mtok = 500000
"""
BUDGET_USD = 5.0
CALL_USD = 1.5
CALLS = 30


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess, pg_url: str, redis_url: str, redis_prefix: str
) -> Iterator[list[ServerProcess]]:
    directory = tmp_path_factory.mktemp("budget")
    config = write_config(directory, upstream=upstream, store_url=pg_url, redis_url=redis_url,
                          redis_prefix=redis_prefix, extra=PRICING)
    processes = start_gateways(directory, config, PROCESSES)
    yield processes
    for process in processes:
        process.stop()


def test_a_daily_budget_is_not_overspent_by_concurrent_calls_on_three_processes(gateways: list[ServerProcess]) -> None:
    key = create_key(gateways[0], budget_day_usd=BUDGET_USD)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> httpx.Response:
                body = {"model": "mock", "messages": [{"role": "user", "content": f"q{i}"}],
                        "temperature": 0.7, "max_tokens": 3}
                return await client.post(f"{gateways[i % PROCESSES].url}/v1/chat/completions", json=body,
                                         headers={"authorization": f"Bearer {key}"})

            return await asyncio.gather(*(one(i) for i in range(CALLS)))

    responses = asyncio.run(burst())
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == CALLS, [r.text for r in responses if r.status_code not in (200, 429)]
    assert len(ok) * CALL_USD <= BUDGET_USD
    assert len(ok) == int(BUDGET_USD // CALL_USD)  # and no call the budget could pay for was refused
    assert all(r.json()["error"]["code"] for r in refused)
    for r in ok:
        assert r.json()["usage"]["completion_tokens"] == 3  # the price assumption above holds

    # The stored spend agrees: what was admitted is what was billed, under the budget.
    usage = httpx.get(f"{gateways[1].url}/admin/usage", params={"by": "key"}, headers=ADMIN, timeout=30)
    assert usage.status_code == 200
