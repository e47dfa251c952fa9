"""``aiestack serve --workers 3``: one port, three worker processes, one PostgreSQL and one Redis.

- An RPM limit admits exactly its count across the workers (the kernel spreads connections).
- A worker killed with SIGKILL in the middle of a stream: its client sees the stream break (never a
  clean end), the other workers keep serving, the supervisor starts a replacement, and every
  exchange completed before the kill is in the store, unchanged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from aiestack.stores.open import open_store
from aiestack.testing.cluster import ServerProcess

from ._kit import create_key, start_gateways, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

WORKERS = 3
CONVERGE_S = 20.0


def _until(check: object, what: str) -> object:
    deadline = time.monotonic() + CONVERGE_S
    while True:
        value = check()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {CONVERGE_S:.0f} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess, pg_url: str, redis_url: str, redis_prefix: str
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("workers")
    config = write_config(directory, upstream=upstream, store_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    (process,) = start_gateways(directory, config, 1, workers=WORKERS)
    _until(lambda: len(_workers(process)) == WORKERS, "three workers up")
    yield process
    process.stop()


def _workers(server: ServerProcess) -> list[psutil.Process]:
    """The supervisor's worker processes (uvicorn's multiprocessing children, not its helpers)."""
    workers = []
    for child in psutil.Process(server.pid).children():
        try:  # a killed worker stays a zombie until the supervisor reaps it: it is not a worker
            if child.status() != psutil.STATUS_ZOMBIE and "multiprocessing.resource_tracker" not in " ".join(
                child.cmdline()
            ):
                workers.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return workers


def _serving(server: ServerProcess, local_port: int) -> psutil.Process:
    """The worker holding the connection whose client end is ``local_port``."""
    for worker in _workers(server):
        for connection in worker.net_connections(kind="tcp"):
            if connection.raddr and connection.raddr.port == local_port:
                return worker
    raise AssertionError(f"no worker holds the connection from port {local_port}")


def test_an_rpm_limit_admits_exactly_its_count_across_the_workers(server: ServerProcess) -> None:
    rpm = 8
    key = create_key(server, rpm=rpm)
    if (left := 60 - time.time() % 60) < 10:  # keep the burst inside one wall-clock minute
        time.sleep(left + 0.05)
    minute = int(time.time() // 60)

    async def burst() -> list[int]:
        # A fresh connection per request, so the kernel hands them to different workers.
        async def one(i: int) -> int:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": "mock", "messages": [{"role": "user", "content": f"w{i}"}], "temperature": 0}
                response = await client.post(f"{server.url}/v1/chat/completions", json=body,
                                             headers={"authorization": f"Bearer {key}"})
                return response.status_code

        return await asyncio.gather(*(one(i) for i in range(rpm * 3)))

    codes = asyncio.run(burst())
    assert int(time.time() // 60) == minute, "the burst straddled a minute"
    assert codes.count(200) == rpm and codes.count(429) == rpm * 2


def test_a_worker_killed_mid_stream_breaks_only_its_stream(server: ServerProcess, pg_url: str) -> None:
    key = create_key(server)
    headers = {"authorization": f"Bearer {key}"}
    completed = []
    for i in range(6):
        body = {"model": "mock", "messages": [{"role": "user", "content": f"before the crash {i}"}]}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert response.status_code == 200
        completed.append(response.headers["x-aiestack-exchange-id"])
    store = open_store(pg_url, "exchanges")
    try:
        _until(lambda: all(store.get_exchange(i) is not None for i in completed), "completed exchanges written")
        before = {i: store.get_exchange(i) for i in completed}

        body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "[slow] a long answer"}]}
        received: list[str] = []
        with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{server.url}/v1/chat/completions", json=body, headers=headers
        ) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            received.append(next(line for line in lines if line.startswith("data:")))  # the stream has begun
            local_port = stream.extensions["network_stream"].get_extra_info("client_addr")[1]
            victim = _serving(server, local_port)
            os.kill(victim.pid, signal.SIGKILL)
            with pytest.raises(httpx.HTTPError):  # an incomplete chunked body: an error, never a clean end
                received.extend(lines)
        assert "data: [DONE]" not in received

        # The others keep serving, at once, and a replacement worker is started.
        for i in range(6):
            body = {"model": "mock", "messages": [{"role": "user", "content": f"after the crash {i}"}]}
            with httpx.Client(timeout=30) as fresh:  # new connections, spread over the living workers
                assert fresh.post(f"{server.url}/v1/chat/completions", json=body, headers=headers).status_code == 200
        _until(lambda: len(_workers(server)) == WORKERS and victim.pid not in {w.pid for w in _workers(server)},
               "the supervisor replaced the killed worker")

        # What was completed before the crash is intact.
        assert {i: store.get_exchange(i) for i in completed} == before
    finally:
        store.close()
