"""The admin API: virtual keys and usage. Every route needs the admin key.

``POST /admin/keys`` (the secret is in this response only), ``GET /admin/keys``,
``DELETE /admin/keys/{key_id}`` (revoke; keys are never deleted, so old exchanges keep naming
them) and ``GET /admin/usage?by=model,day&since=2025-01-01``. The key service is synchronous
(the CLI calls it directly), so it runs in a worker thread here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.gateway.keys import KeyService
from aiestack.server.auth import admin
from aiestack.server.bodies import InvalidBody, body_openapi, parse_body
from aiestack.server.responses import JSONBytesResponse
from aiestack.server.schemas import KeyCreateRequest
from aiestack.stores.base import KeyRecord

router = APIRouter(prefix="/admin", tags=["admin"])


async def _keys(request: Request) -> KeyService:
    stack: Stack = request.app.state.stack
    await admin(stack, request)
    return stack.keys


def key_json(record: KeyRecord) -> dict[str, Any]:
    """A key as the API shows it: everything but the secret's hash."""
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "secret_hash"}
    out["models"] = list(record.models)
    out["revoked"] = record.revoked
    return out


@router.post("/keys", status_code=201, response_model=None, openapi_extra=body_openapi(KeyCreateRequest))
async def create_key(request: Request) -> Response:
    """A new key; ``key`` in the answer is its secret, shown this once and never stored."""
    keys = await _keys(request)
    body = parse_body(KeyCreateRequest, await request.body())
    record, secret = await asyncio.to_thread(
        lambda: keys.create(
            tenant=body.tenant,
            name=body.name,
            rpm=body.rpm,
            tpm=body.tpm,
            budget_day_usd=body.budget_day_usd,
            budget_month_usd=body.budget_month_usd,
            models=tuple(body.models),
        )
    )
    return JSONBytesResponse({**key_json(record), "key": secret}, status_code=201)


@router.get("/keys", response_model=None)
async def list_keys(request: Request, tenant: str | None = None, include_revoked: bool = False) -> Response:
    """Keys, oldest first; revoked ones only with ``include_revoked=true``."""
    keys = await _keys(request)
    records = await asyncio.to_thread(keys.list, tenant=tenant, include_revoked=include_revoked)
    return JSONBytesResponse({"object": "list", "data": [key_json(r) for r in records]})


@router.delete("/keys/{key_id}", response_model=None)
async def revoke_key(key_id: str, request: Request) -> Response:
    """Revoke a key (takes effect within the authenticator's cache interval, a few seconds)."""
    keys = await _keys(request)
    record = await asyncio.to_thread(keys.revoke, key_id)
    return JSONBytesResponse(key_json(record))


@router.get("/usage", response_model=None)
async def usage(
    request: Request,
    by: str = Query("model", description="Comma-separated groups: any of key, tenant, model, day."),
    since: str | None = Query(None, description="Start: epoch seconds or an ISO date/time (UTC if no zone)."),
    until: str | None = Query(None, description="End (exclusive), same forms as since."),
) -> Response:
    """Requests, tokens, cost and errors per group over the period."""
    keys = await _keys(request)
    groups = [g.strip() for g in by.split(",") if g.strip()]
    start, end = parse_time(since, "since"), parse_time(until, "until")
    rows = await asyncio.to_thread(keys.usage, by=groups, since=start, until=end)
    return JSONBytesResponse({"object": "list", "data": [dataclasses.asdict(r) for r in rows]})


def parse_time(value: str | None, param: str) -> float | None:
    """Epoch seconds, or an ISO 8601 date / date-time (read as UTC when it names no zone)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not -1e11 < number < 1e11:  # also NaN and inf: year ~5000 is far enough for a usage report
            raise InvalidBody(f"'{param}' is out of range: {text!r}.", param=param, hint="Use epoch seconds such as 1738281600.")
        return number
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidBody(
            f"'{param}' is neither epoch seconds nor an ISO date: {text!r}.",
            param=param,
            hint="Use e.g. 2025-01-31, 2025-01-31T12:00:00Z or 1738281600.",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
