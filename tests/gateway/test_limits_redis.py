"""Limits shared through Redis are exact across gateway processes: the total admitted is the limit.

Each "gateway" is a separate Python process with its own Limits stage and its own Redis client;
they all hammer one key at once (released together through stdin). The clock is pinned in every
process, so the run cannot straddle a minute boundary and see two windows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aiestack.errors import RateLimited, StoreError
from aiestack.gateway.limits import Limits
from aiestack.stores.base import KeyRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.kv_redis import RedisKV
from aiestack.testing.services import redis_prefix
from aiestack.testing.services import redis_url as redis_test_url
from aiestack.types import ChatRequest, Completion, Exchange, Message, Params, Usage

RPM = 50
PROCESSES = 4
ATTEMPTS_EACH = 50  # 200 in all
ANSWER = Completion(
    message=Message(role="assistant", content="y"), model="m", provider="fake", usage=Usage(1, 1)
)

#: One gateway process: argv = redis URL (or "memory"), key prefix, attempts, pinned clock.
GATEWAY = r"""
import asyncio, dataclasses, json, sys

from aiestack.errors import RateLimited
from aiestack.gateway.limits import Limits
from aiestack.stores.base import KeyRecord
from aiestack.stores.kv_memory import MemoryKV
from aiestack.stores.kv_redis import RedisKV
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.types import ChatRequest, Exchange, Message

url, prefix, attempts, now = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])


async def main() -> None:
    store = MemoryExchangeStore()
    store.add_key(KeyRecord(id="key_shared", tenant="t", secret_hash="h", prefix="aie-shared",
                            created_at=0.0, rpm=int(sys.argv[5])))
    kv = MemoryKV() if url == "memory" else RedisKV(url, prefix=prefix)
    await kv.ping()
    limits = Limits(store, kv, store, clock=lambda: now)
    request = ChatRequest(model="m", messages=(Message(role="user", content="x"),))

    async def answer(ex: Exchange) -> Exchange:
        await asyncio.sleep(0)
        return dataclasses.replace(ex, outcome="ok")

    async def one() -> bool:
        try:
            await limits(Exchange(request=request, key_id="key_shared"), answer)
            return True
        except RateLimited:
            return False

    print("ready", flush=True)
    sys.stdin.readline()  # wait until every process is ready
    results = await asyncio.gather(*(one() for _ in range(attempts)))
    await kv.aclose()
    print(json.dumps({"allowed": sum(results), "refused": len(results) - sum(results)}), flush=True)


asyncio.run(main())
"""


def run_gateways(url: str, prefix: str, *, processes: int = PROCESSES) -> list[dict[str, int]]:
    """Start the gateway processes, release them together, and collect what each admitted."""
    now = "1750000008.0"  # 52 s before the end of its minute
    children = [
        subprocess.Popen(
            [sys.executable, "-c", GATEWAY, url, prefix, str(ATTEMPTS_EACH), now, str(RPM)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", "a gateway process failed to start"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60)[0] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(child.returncode == 0 for child in children)
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


@pytest.fixture(scope="module")
def redis_url() -> str:
    url, why = redis_test_url()
    if url is None:
        pytest.skip(why)
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    with redis_prefix(redis_url) as value:
        yield value


@pytest.mark.integration
def test_rpm_is_exact_across_processes_with_redis(redis_url: str, prefix: str) -> None:
    results = run_gateways(redis_url, prefix)
    assert sum(r["allowed"] for r in results) == RPM
    assert sum(r["refused"] for r in results) == PROCESSES * ATTEMPTS_EACH - RPM


@pytest.mark.integration
def test_without_redis_each_process_admits_the_whole_limit() -> None:
    """Why Redis is needed: in-process counters let every process admit the full limit."""
    results = run_gateways("memory", "unused:", processes=2)
    assert [r["allowed"] for r in results] == [RPM, RPM]


@pytest.mark.integration
async def test_tpm_estimates_and_refunds_are_shared_between_gateways(redis_url: str, prefix: str) -> None:
    """Two Limits stages (two gateways) over one Redis see each other's token use and refunds."""
    store = MemoryExchangeStore()
    store.add_key(KeyRecord(id="key_t", tenant="t", secret_hash="h", prefix="aie-t", created_at=0.0, tpm=100))
    kv_a, kv_b = RedisKV(redis_url, prefix=prefix), RedisKV(redis_url, prefix=prefix)
    a = Limits(store, kv_a, store, clock=lambda: 1_750_000_008.0)
    b = Limits(store, kv_b, store, clock=lambda: 1_750_000_008.0)
    # About 1 input token + 4 for the message + max_tokens 45: an estimate of 50.
    request = ChatRequest(
        model="m", messages=(Message(role="user", content="x"),), params=Params(max_tokens=45)
    )
    release = asyncio.Event()
    admitted = asyncio.Event()  # set once b has passed its limits (its estimate is counted)

    async def answer_after_release(ex: Exchange) -> Exchange:
        admitted.set()
        await release.wait()
        return dataclasses.replace(ex, completion=ANSWER, outcome="ok")

    async def answer(ex: Exchange) -> Exchange:
        return dataclasses.replace(ex, completion=ANSWER, outcome="ok")

    try:
        await a(Exchange(request=request, key_id="key_t"), answer)  # window: 2 (real tokens)
        in_flight = asyncio.create_task(b(Exchange(request=request, key_id="key_t"), answer_after_release))
        await asyncio.wait_for(admitted.wait(), timeout=30)  # b holds its estimate: 2 + 50
        with pytest.raises(RateLimited, match="TPM limit of 100"):
            await a(Exchange(request=request, key_id="key_t"), answer)
        release.set()
        await in_flight  # b's refund: 2 + 2
        await a(Exchange(request=request, key_id="key_t"), answer)
        assert await kv_a.get(f"tpm:key_t:{int(1_750_000_008.0 // 60)}") == 6
    finally:
        await kv_a.aclose()
        await kv_b.aclose()


@pytest.mark.unit
async def test_an_unreachable_redis_fails_closed_with_a_hint() -> None:
    store = MemoryExchangeStore()
    store.add_key(KeyRecord(id="key_r", tenant="t", secret_hash="h", prefix="aie-r", created_at=0.0, rpm=5))
    kv = RedisKV("redis://127.0.0.1:1/0")
    limits = Limits(store, kv, store)

    async def never(_: Exchange) -> Exchange:
        raise AssertionError("a request must not pass when its limits cannot be checked")

    request = ChatRequest(model="m", messages=(Message(role="user", content="x"),))
    with pytest.raises(StoreError) as raised:
        await limits(Exchange(request=request, key_id="key_r"), never)
    assert "127.0.0.1:1" in raised.value.message and "redis_url" in (raised.value.hint or "")
    await kv.aclose()


@pytest.mark.unit
async def test_with_fail_open_an_unreachable_redis_lets_requests_through_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryExchangeStore()
    store.add_key(KeyRecord(id="key_o", tenant="t", secret_hash="h", prefix="aie-o", created_at=0.0, rpm=1))
    kv = RedisKV("redis://127.0.0.1:1/0")
    limits = Limits(store, kv, store, fail_open=True)
    passed = 0

    async def answer(ex: Exchange) -> Exchange:
        nonlocal passed
        passed += 1
        return dataclasses.replace(ex, completion=ANSWER)

    request = ChatRequest(model="m", messages=(Message(role="user", content="x"),))
    with caplog.at_level("WARNING", logger="aiestack.gateway.limits"):
        for _ in range(3):  # past the RPM of 1: nothing is metered while Redis is away
            result = await limits(Exchange(request=request, key_id="key_o"), answer)
            assert result.completion == ANSWER
    assert passed == 3
    warnings = [r for r in caplog.records if "not enforced" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1:1" in warnings[0].getMessage()
    await kv.aclose()
