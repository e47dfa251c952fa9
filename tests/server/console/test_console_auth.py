"""Console login: the admin key gives a signed HttpOnly SameSite=Strict session; CSRF guards every form."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from aiestack.server.console import auth

from ..conftest import ADMIN, ADMIN_KEY
from .conftest import Console, csrf_of, login

pytestmark = pytest.mark.unit

Client = tuple[httpx.AsyncClient, FastAPI]
HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}], "stream": True}


async def test_pages_send_an_anonymous_visitor_to_login(anonymous: Client) -> None:
    client, _ = anonymous
    for path in ("/", "/exchanges", "/dashboard", "/playground", "/evals", "/feedback", "/prompts"):
        r = await client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=" + path), path
    login_page = await client.get("/login?next=/dashboard")
    assert login_page.status_code == 200
    assert 'name="key"' in login_page.text and 'value="/dashboard"' in login_page.text


async def test_a_wrong_key_is_refused_and_sets_no_cookie(anonymous: Client) -> None:
    client, _ = anonymous
    r = await client.post("/login", data={"key": "not-the-key", "next": "/exchanges"})
    assert r.status_code == 401
    assert "not the admin key" in r.text
    assert auth.SESSION_COOKIE not in r.headers.get("set-cookie", "")
    assert (await client.get("/exchanges")).status_code == 303


async def test_repeated_wrong_keys_are_throttled_per_address(anonymous: Client) -> None:
    client, app = anonymous
    app.state.stack.settings.gateway.auth_failure_limit = 3
    for _ in range(3):
        assert (await client.post("/login", data={"key": "guess", "next": "/"})).status_code == 401
    r = await client.post("/login", data={"key": ADMIN_KEY, "next": "/"})  # even the right key waits
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 250 and "try again in" in r.text
    assert auth.SESSION_COOKIE not in r.headers.get("set-cookie", "")
    await app.state.stack.kv.delete("authfail:127.0.0.1")  # the window passed
    assert (await client.post("/login", data={"key": ADMIN_KEY, "next": "/"})).status_code == 303


async def test_admin_key_guesses_on_the_api_count_with_console_logins(anonymous: Client) -> None:
    """The issue's bypass: the admin key as a Bearer token, ~200 guesses/s, never limited."""
    client, app = anonymous
    app.state.stack.settings.gateway.auth_failure_limit = 4
    assert (await client.post("/login", data={"key": "guess", "next": "/"})).status_code == 401
    for _ in range(3):
        assert (await client.get("/admin/keys", headers={"authorization": "Bearer guess"})).status_code in (401, 403)
    for path in ("/admin/keys", "/v1/models"):
        r = await client.get(path, headers=ADMIN)  # the right key, from a locked-out address
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failed_authentications"
    assert (await client.post("/login", data={"key": ADMIN_KEY, "next": "/"})).status_code == 429


async def test_a_logged_out_session_cookie_is_refused_when_replayed(console: Console) -> None:
    client = console.client
    console.stack.keys.create(tenant="acme")  # keys are required now: /v1 needs a key or the session
    cookie = client.cookies.get(auth.SESSION_COOKIE)
    assert cookie and (await client.get("/exchanges")).status_code == 200
    r = await client.post("/v1/chat/completions", json=HELLO, headers={auth.CSRF_HEADER: console.csrf})
    assert r.status_code == 200
    assert (await client.post("/logout", data={"csrf_token": console.csrf})).status_code == 303
    client.cookies.set(auth.SESSION_COOKIE, cookie)  # a copy of the cookie, kept by whoever had it
    assert (await client.get("/exchanges")).status_code == 303
    r = await client.post("/v1/chat/completions", json=HELLO, headers={auth.CSRF_HEADER: console.csrf})
    assert r.status_code == 401


async def test_the_admin_key_gives_a_strict_httponly_session(anonymous: Client) -> None:
    client, _ = anonymous
    r = await client.post("/login", data={"key": ADMIN_KEY, "next": "/dashboard"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith(auth.SESSION_COOKIE)
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert ADMIN_KEY not in r.headers["set-cookie"]  # the cookie never holds the key
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


async def test_login_only_returns_to_local_pages(anonymous: Client) -> None:
    client, _ = anonymous
    r = await client.post("/login", data={"key": ADMIN_KEY, "next": "//evil.example/x"})
    assert r.headers["location"] == "/exchanges"
    assert auth.safe_next("https://evil.example") == "/exchanges"
    assert auth.safe_next("/evals?suite=a") == "/evals?suite=a"


async def test_a_login_form_posted_from_another_site_is_refused(anonymous: Client) -> None:
    client, _ = anonymous
    r = await client.post(
        "/login", data={"key": ADMIN_KEY, "next": "/"}, headers={"origin": "https://evil.example"}
    )
    assert r.status_code == 401 and "another site" in r.text


async def test_a_tampered_or_expired_cookie_is_no_session(console: Console) -> None:
    client = console.client
    value = client.cookies[auth.SESSION_COOKIE]
    issued, nonce, signature = value.split(".")
    client.cookies.set(auth.SESSION_COOKIE, f"{int(issued) + 1}.{nonce}.{signature}")
    assert (await client.get("/exchanges")).status_code == 303
    client.cookies.set(auth.SESSION_COOKIE, value)
    assert (await client.get("/exchanges")).status_code == 200
    scope = {
        "type": "http", "method": "GET", "path": "/", "headers": [(b"cookie", f"{auth.SESSION_COOKIE}={value}".encode())],
        "app": console.app, "query_string": b"", "scheme": "http", "server": ("testserver", 80),
    }
    request = Request(scope)
    assert auth.read_session(request) is not None
    assert auth.read_session(request, now=time.time() + auth.SESSION_MAX_AGE_S + 5) is None


async def test_logout_needs_the_csrf_token_and_ends_the_session(console: Console) -> None:
    client = console.client
    refused = await client.post("/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert (await client.get("/exchanges")).status_code == 200
    done = await client.post("/logout", data={"csrf_token": console.csrf})
    assert done.status_code == 303 and done.headers["location"] == "/login"
    assert (await client.get("/exchanges")).status_code == 303


async def test_the_session_authenticates_v1_only_with_its_csrf_header(console: Console) -> None:
    client = console.client
    # Once a key exists, /v1 needs one: the cookie alone must not do.
    created = await client.post("/admin/keys", json={"tenant": "acme"}, headers=ADMIN)
    assert created.status_code == 201
    bare = await client.post("/v1/chat/completions", json=HELLO)
    assert bare.status_code == 401
    forged = await client.post("/v1/chat/completions", json=HELLO, headers={"x-csrf-token": "nope"})
    assert forged.status_code == 401
    ok = await client.post("/v1/chat/completions", json=HELLO, headers={"x-csrf-token": console.csrf})
    assert ok.status_code == 200
    assert "hello" in ok.text and ok.text.rstrip().endswith("data: [DONE]")


async def test_the_api_and_platform_routes_are_untouched(console: Console) -> None:
    client = console.client
    assert (await client.get("/health")).json() == {"status": "ok"}
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_static_assets_are_served_by_aiestack(anonymous: Client) -> None:
    client, _ = anonymous
    css = await client.get("/static/console/console.css")
    js = await client.get("/static/console/console.js")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert js.status_code == 200 and "/v1/chat/completions" in js.text
    page = (await client.get("/login")).text
    assert "http://" not in page and "https://" not in page  # no CDN: every asset is local


async def test_without_an_admin_key_login_says_what_to_set(
    anonymous: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = anonymous
    monkeypatch.delenv(app.state.stack.settings.gateway.admin_key_env)
    page = await client.get("/login")
    assert "No admin key is configured" in page.text
    r = await client.post("/login", data={"key": "anything"})
    assert r.status_code == 401 and app.state.stack.settings.gateway.admin_key_env in r.text


async def test_csrf_token_is_tied_to_the_session(anonymous: Client) -> None:
    client, _ = anonymous
    first = await login(client)
    client.cookies.clear()
    second = await login(client)
    assert first != second
    assert csrf_of((await client.get("/exchanges")).text) == second


async def test_a_tenant_key_cannot_log_in(anonymous: Client) -> None:
    client, _ = anonymous
    created = await client.post("/admin/keys", json={"tenant": "acme"}, headers=ADMIN)
    secret = created.json()["key"]
    r = await client.post("/login", data={"key": secret, "next": "/exchanges"})
    assert r.status_code == 401 and "not the admin key" in r.text
    assert auth.SESSION_COOKIE not in r.headers.get("set-cookie", "")
