"""Integers and numbers past what a column, a C extension or a provider holds are a 400 naming the field."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from .conftest import ADMIN

pytestmark = pytest.mark.unit

Client = tuple[httpx.AsyncClient, FastAPI]
HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hello"}]}
HUGE = 10**30


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "max_tokens", HUGE),
        ("/v1/chat/completions", "max_completion_tokens", HUGE),
        ("/v1/chat/completions", "seed", HUGE),
        ("/v1/chat/completions", "seed", -HUGE),
        ("/v1/chat/completions", "top_k", HUGE),
        ("/v1/completions", "max_tokens", HUGE),
        ("/v1/completions", "seed", HUGE),
        ("/v1/embeddings", "dimensions", HUGE),
    ],
)
async def test_huge_integers_are_400_naming_the_field(asgi: Client, path: str, field: str, value: int) -> None:
    client, _ = asgi
    base = {"model": "fake", "prompt": "hi"} if path == "/v1/completions" else HELLO
    if path == "/v1/embeddings":
        base = {"model": "fake-embed", "input": "hi"}
    r = await client.post(path, json={**base, field: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and field in error["message"]


async def test_largest_seed_is_accepted(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post("/v1/chat/completions", json={**HELLO, "seed": 2**63 - 1, "max_tokens": 2**31 - 1})
    assert r.status_code == 200, r.text


async def test_usage_time_out_of_range_is_400(asgi: Client) -> None:
    client, _ = asgi
    for value in ("1e30", "nan", "inf"):
        r = await client.get("/admin/usage", params={"since": value}, headers=ADMIN)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "since"


def test_console_filter_numbers_are_bounded() -> None:
    from aiestack.server.console.pages_exchanges import parse_filter

    flt, problems = parse_filter({"min_tokens": "1e30", "min_ms": "1e300", "min_cost": "5"})
    assert flt.min_tokens is None and flt.min_latency_ms is None and flt.min_cost_usd == 5
    assert any("min_tokens" in p for p in problems) and any("min_ms" in p for p in problems)


async def test_a_text_field_past_the_limit_is_400_naming_it(asgi: Client) -> None:
    client, app = asgi
    app.state.stack.settings.gateway.max_text_chars = 1000
    long = "x" * 1001
    for body, param in (
        ({**HELLO, "messages": [{"role": "user", "content": long}]}, "messages"),
        ({**HELLO, "stop": [long]}, "stop"),
        ({**HELLO, "user": long}, "user"),
        ({**HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"d": long}}}]}, "tools"),
    ):
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param and "1,000 characters" in r.json()["error"]["message"]
    r = await client.post("/v1/chat/completions", json={**HELLO, "messages": [{"role": "user", "content": "x" * 1000}]})
    assert r.status_code == 200


async def test_the_text_limit_counts_characters_not_bytes_nor_escapes(asgi: Client) -> None:
    """Bodies no longer than the limit skip the walk (a decoded string is never longer than its JSON);
    longer ones are walked, and what counts is a string's characters."""
    client, app = asgi
    app.state.stack.settings.gateway.max_text_chars = 1000
    for text, status in (("é" * 1000, 200), ("é" * 1001, 400), ("\n" * 1000, 200), ("\u2028" * 1001, 400)):
        r = await client.post("/v1/chat/completions", json={**HELLO, "messages": [{"role": "user", "content": text}]})
        assert r.status_code == status, (len(text), r.text)
    r = await client.post("/v1/chat/completions", json={**HELLO, "messages": [{"role": "user", "content": "x" * 900}]})
    assert r.status_code == 200  # under the limit in bytes too: not walked, and rightly so
