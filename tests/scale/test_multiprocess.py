"""Three gateway processes (as if on three hosts) on one PostgreSQL and one Redis agree.

Each process is ``aiestack serve`` on its own port of 127.0.0.1 with the same configuration: keys
made on one work on the others and a revoke reaches them all; an RPM limit admits exactly its
count across the three; an answer cached by one is a hit on the others (exact and semantic); a
prompt label moved in the store changes what every process renders; the semantic router sends a
question to the same route everywhere; the console of one process shows the exchanges of all; an
agent run started on one process is cancelled from another.
The processes are started once for the module and stopped at its end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aiestack.testing.cluster import ServerProcess

from ._kit import ADMIN, ADMIN_KEY, create_key, start_gateways, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

PROCESSES = 3
#: Every poll below (for a revoke, a label move, a flush) gives up after this long.
CONVERGE_S = 15.0

SUPPORT_ROUTE = """
[routes.support]
deployments = ["mock"]
prompt = "support@production"

[pricing.up-general]
input_per_mtok = 10000.0
output_per_mtok = 10000.0

[agents.slowpoke]
model = "mock"
instructions = "Talk."
"""
#: The price above: one US cent per token, in and out.
USD_PER_TOKEN = 0.01


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream: ServerProcess, pg_url: str, redis_url: str, redis_prefix: str
) -> Iterator[list[ServerProcess]]:
    directory = tmp_path_factory.mktemp("cluster")
    config = write_config(directory, upstream=upstream, store_url=pg_url, redis_url=redis_url,
                          redis_prefix=redis_prefix, extra=SUPPORT_ROUTE)
    _push_prompt(pg_url, "echo: support prompt v1")  # the route's prompt exists before any request
    processes = start_gateways(directory, config, PROCESSES)
    yield processes
    for process in processes:
        process.stop()


def _registry(pg_url: str) -> Any:
    from aiestack.prompts.registry import PromptRegistry
    from aiestack.stores.open import open_store

    store = open_store(pg_url, "exchanges")
    store.migrate()
    return PromptRegistry(store, ttl_s=0), store


def _push_prompt(pg_url: str, template: str) -> int:
    registry, store = _registry(pg_url)
    try:
        version, _ = registry.push("support", template, label="production")
        return int(version.version)
    finally:
        store.close()


def _chat(gateway: ServerProcess, key: str, text: str, *, model: str = "mock", **params: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0, **params}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


def _answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def _until(check: Any, what: str) -> Any:
    """Poll ``check()`` until it returns a truthy value, for at most CONVERGE_S."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {CONVERGE_S:.0f} s")
        time.sleep(0.05)


def _upstream_chats(upstream: ServerProcess) -> int:
    return int(httpx.get(f"{upstream.url}/stats", timeout=10).json()["chat"])


def test_a_key_made_on_one_process_works_on_all_and_a_revoke_reaches_all(gateways: list[ServerProcess]) -> None:
    key = create_key(gateways[0])
    for gateway in gateways:
        assert "answers: hello" in _answer(_chat(gateway, key, "hello from every host"))

    key_id = httpx.get(f"{gateways[1].url}/admin/keys", headers=ADMIN, timeout=10).json()["data"][-1]["id"]
    assert httpx.delete(f"{gateways[1].url}/admin/keys/{key_id}", headers=ADMIN, timeout=10).status_code == 200
    for gateway in gateways:
        _until(lambda g=gateway: _chat(g, key, "still there?").status_code == 401, f"revoke seen by {gateway.name}")


def test_an_rpm_limit_admits_exactly_its_count_across_three_processes(gateways: list[ServerProcess]) -> None:
    rpm = 9
    key = create_key(gateways[0], rpm=rpm)
    # The RPM window is the wall-clock minute: start the burst early in one, so all of it lands there.
    if (left := 60 - time.time() % 60) < 20:
        time.sleep(left + 0.05)
    minute = int(time.time() // 60)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            async def one(i: int) -> int:
                gateway = gateways[i % PROCESSES]
                body = {"model": "mock", "messages": [{"role": "user", "content": f"request {i}"}], "temperature": 0}
                response = await client.post(f"{gateway.url}/v1/chat/completions", json=body,
                                             headers={"authorization": f"Bearer {key}"})
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(rpm * PROCESSES)))

    codes = asyncio.run(burst())
    assert int(time.time() // 60) == minute, "the burst straddled a minute; the window check is meaningless"
    assert codes.count(200) == rpm
    assert codes.count(429) == rpm * (PROCESSES - 1)


def test_a_budget_is_shared_and_never_overspent_across_three_processes(gateways: list[ServerProcess]) -> None:
    budget = 0.5
    key = create_key(gateways[0], budget_day_usd=budget)
    headers = {"authorization": f"Bearer {key}"}

    def body(i: int) -> dict[str, Any]:
        return {"model": "mock", "messages": [{"role": "user", "content": f"spend {i:03d}"}], "max_tokens": 8}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{gateways[i % PROCESSES].url}/v1/chat/completions", json=body(i), headers=headers)
                for i in range(30)
            ))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 429} and codes.count(200) >= 1
    spent = sum(r.json()["usage"]["total_tokens"] * USD_PER_TOKEN for r in responses if r.status_code == 200)
    assert spent <= budget + 1e-9  # reserved before each call: never overspent, however many processes
    # Sequentially until the budget refuses; then every process refuses the same request.
    for i in range(30, 60):
        if _chat_body(gateways[i % PROCESSES], headers, body(i)).status_code == 429:
            break
    refusals = [_chat_body(gateway, headers, body(99)) for gateway in gateways]
    assert [r.status_code for r in refusals] == [429] * PROCESSES
    assert all("budget" in r.json()["error"]["message"] for r in refusals)


def _chat_body(gateway: ServerProcess, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_feedback_given_on_one_process_shows_in_the_console_of_another(gateways: list[ServerProcess]) -> None:
    key = create_key(gateways[0])
    exchange_id = _chat(gateways[0], key, "please rate me").headers["x-aiestack-exchange-id"]
    given = httpx.post(f"{gateways[1].url}/v1/feedback", headers={"authorization": f"Bearer {key}"}, timeout=30,
                       json={"exchange_id": exchange_id, "thumbs": "down", "comment": "marked on host one"})
    # 201, or 202 when the exchange is still in the first process's write batch (kept pending, then stored).
    assert given.status_code in (201, 202), given.text
    with httpx.Client(base_url=gateways[2].url, timeout=10) as browser:
        assert browser.post("/login", data={"key": ADMIN_KEY}).status_code in (200, 303)
        _until(lambda: "marked on host one" in browser.get(f"/exchanges/{exchange_id}").text,
               "the feedback in another process's console")


def test_an_answer_cached_by_one_process_is_a_hit_on_the_others(
    gateways: list[ServerProcess], upstream: ServerProcess
) -> None:
    key = create_key(gateways[0])
    question = "What is the tallest mountain in Scotland?"
    before = _upstream_chats(upstream)
    first = _chat(gateways[0], key, question)
    assert first.headers["x-aiestack-cache"] == "miss"
    for gateway in gateways[1:]:
        response = _chat(gateway, key, question)
        assert response.headers["x-aiestack-cache"] == "hit"
        assert _answer(response) == _answer(first)
    assert _upstream_chats(upstream) == before + 1  # only the first request reached the model

    # The same question in other punctuation misses the exact cache and hits the semantic one once
    # the other process's index has read the entry (each try is a new variant, so none is exact).
    variants = iter(f"What is the tallest mountain in Scotland{end}" for end in ["", "!", "?!", "...", " ?", "!!"] * 20)

    def semantic_hit() -> bool:
        return _chat(gateways[2], key, next(variants)).headers["x-aiestack-cache"] == "semantic-hit"

    _until(semantic_hit, "a semantic hit on another process")


def test_a_moved_prompt_label_changes_what_every_process_renders(
    gateways: list[ServerProcess], pg_url: str
) -> None:
    key = create_key(gateways[0])
    for i, gateway in enumerate(gateways):
        assert "[echo: support prompt v1]" in _answer(_chat(gateway, key, f"help {i}", model="support"))
    _push_prompt(pg_url, "echo: support prompt v2")
    for i, gateway in enumerate(gateways):
        _until(lambda g=gateway, i=i: "[echo: support prompt v2]" in _answer(_chat(g, key, f"help again {i} {time.monotonic()}", model="support")),
               f"the moved label seen by {gateway.name}")


def test_the_semantic_router_picks_the_same_route_on_every_process(gateways: list[ServerProcess]) -> None:
    key = create_key(gateways[0])
    for gateway in gateways:
        billing = _answer(_chat(gateway, key, "why was I charged twice on my invoice", model="auto"))
        assert billing.startswith("up-billing answers:")
        general = _answer(_chat(gateway, key, "tell me a story about a dragon", model="auto"))
        assert general.startswith("up-general answers:")


def test_the_console_of_one_process_shows_exchanges_made_on_the_others(gateways: list[ServerProcess]) -> None:
    key = create_key(gateways[0])
    made = [_chat(gateway, key, f"console check {gateway.name}") for gateway in gateways[:2]]
    ids = [response.headers["x-aiestack-exchange-id"] for response in made]

    with httpx.Client(base_url=gateways[0].url, timeout=10) as browser:
        login = browser.post("/login", data={"key": ADMIN_KEY}, follow_redirects=False)
        assert login.status_code in (302, 303), login.text
        session = dict(browser.cookies)
    with httpx.Client(base_url=gateways[2].url, cookies=session, timeout=10) as browser:
        for exchange_id in ids:
            page = _until(lambda e=exchange_id: (r := browser.get(f"/exchanges/{e}")).status_code == 200 and r,
                          f"exchange {exchange_id} in another process's console")
            assert exchange_id in page.text
        listing = browser.get("/exchanges")
        assert listing.status_code == 200
        assert all(exchange_id[:8] in listing.text for exchange_id in ids)


def test_the_processes_are_distinct(gateways: list[ServerProcess]) -> None:
    assert len({gateway.pid for gateway in gateways}) == PROCESSES
    assert all(gateway.alive() for gateway in gateways)


def test_an_agent_run_started_on_one_process_is_cancelled_from_another(gateways: list[ServerProcess]) -> None:
    import threading

    started: dict[str, Any] = {}

    def start() -> None:  # the run's model call streams for 10 s ([slow]) on process 0
        began = time.monotonic()
        started["response"] = httpx.post(f"{gateways[0].url}/v1/agents/slowpoke/runs", headers=ADMIN,
                                         json={"task": "[slow] count to forty"}, timeout=60)  # fmt: skip
        started["took_s"] = time.monotonic() - began

    thread = threading.Thread(target=start)
    thread.start()

    def running() -> list[dict[str, Any]]:
        listed = httpx.get(f"{gateways[1].url}/v1/agents/slowpoke/runs?status=running", headers=ADMIN, timeout=10)
        data: list[dict[str, Any]] = listed.json()["data"]
        return data

    run_id = _until(running, "the run, seen from process 1")[0]["run_id"]
    cancelled = httpx.post(f"{gateways[1].url}/v1/agents/slowpoke/runs/{run_id}/cancel", headers=ADMIN,
                           json={"reason": "stopped from host one"}, timeout=30)  # fmt: skip
    thread.join(30)
    assert cancelled.status_code == 200, cancelled.text
    run = cancelled.json()
    assert run["status"] == "stopped" and run["stop_reason"] == "cancelled" and run["detail"] == "stopped from host one"
    assert [s["type"] for s in run["steps"]] == ["run_started", "run_stopped"]
    first = started["response"]
    assert first.status_code == 200 and first.json()["run_id"] == run_id and first.json()["stop_reason"] == "cancelled"
    assert started["took_s"] < 9  # the model call in flight was abandoned, not waited for
