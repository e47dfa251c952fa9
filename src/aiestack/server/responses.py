"""JSON responses and the OpenAI error shape, serialised with orjson.

Every body this server sends goes through :func:`dumps`: orjson is several times faster than the
standard library on the small dicts of the hot path, and it rejects NaN/Infinity instead of
emitting invalid JSON. Errors always use the OpenAI shape
``{"error": {"message", "type", "param", "code"}}`` so that an unmodified OpenAI SDK raises the
matching exception class (``BadRequestError``, ``NotFoundError``, ``RateLimitError``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from aiestack.errors import AiestackError

#: Response headers carrying the exchange id (to attach feedback) and aiestack's own time.
EXCHANGE_ID_HEADER = "x-aiestack-exchange-id"
OVERHEAD_HEADER = "x-aiestack-overhead-ms"
#: The guardrail actions taken, e.g. ``pii:redact,injection:pass`` (see docs/guardrails.md).
GUARD_HEADER = "x-aiestack-guard"


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes; non-string dict keys (never expected) are stringified, not fatal."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


class JSONBytesResponse(Response):
    """A JSON response rendered by orjson (FastAPI's ``JSONResponse`` uses the slower ``json``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_body(message: str, *, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONBytesResponse:
    return JSONBytesResponse(
        error_body(message, type_=type_, code=code, param=param), status_code=status, headers=headers
    )


def aiestack_error_response(
    exc: AiestackError, headers: Mapping[str, str] | None = None
) -> JSONBytesResponse:
    """The response for a typed error; rate limits carry ``Retry-After`` (whole seconds, at least 1)."""
    merged = dict(headers or {})
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after >= 0:
        merged["retry-after"] = str(max(1, round(retry_after)))
    return JSONBytesResponse(exc.to_openai(), status_code=exc.http_status, headers=merged)
