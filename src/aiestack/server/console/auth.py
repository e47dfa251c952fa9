"""Console sessions: log in with the admin key, get a signed, HttpOnly, SameSite=Strict cookie.

The session is ``{issued}.{nonce}.{signature}``, signed with HMAC-SHA256 under a key derived from
the admin key, so every server process that shares the admin key accepts it, and changing the admin
key logs everyone out. Sessions last :data:`SESSION_MAX_AGE_S`; logging out revokes the session's
nonce in the stack's KV (shared by every process with Redis; per process without it), so the cookie
is refused afterwards even if it was copied. Failed logins count, per client address, in the same
:class:`~aiestack.gateway.keys.FailedAuthentications` as failed API keys.

Cross-site request forgery is stopped three ways: the cookie is ``SameSite=Strict`` (a browser
does not send it on requests another site starts); every state-changing request must carry the
session's CSRF token (a hidden form field, or the ``X-CSRF-Token`` header from JavaScript), which
another site cannot read; and a POST whose ``Origin`` names another site is refused.

The same session (with its CSRF header) authenticates the console's own calls to ``/v1``, as the
admin: that is how the playground streams from ``/v1/chat/completions`` without holding the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from aiestack.gateway.keys import ADMIN, Principal

SESSION_COOKIE = "aiestack_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_MAX_AGE_S = 12 * 3600

_SIGNING_CONTEXT = b"aiestack console session v1"


class LoginRequired(Exception):
    """A console page was asked for without a valid session: the browser is sent to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRejected(Exception):
    """A state-changing console request without the session's CSRF token, or from another origin."""


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    issued_at: int
    csrf: str


def admin_key_from_env(admin_key_env: str) -> str | None:
    """The admin key the server was started with (read where build.py reads it)."""
    return os.environ.get(admin_key_env) or None


def _signing_key(request: Request) -> bytes | None:
    """The HMAC key for sessions, derived from the admin key once per app (kept on ``app.state``)."""
    state = request.app.state
    cached: bytes | None = getattr(state, "console_signing_key", None)
    if cached is not None:
        return cached
    stack = getattr(state, "stack", None)
    if stack is None:
        return None
    key = admin_key_from_env(stack.settings.gateway.admin_key_env)
    if key is None:
        return None
    derived = hmac.new(key.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest()
    state.console_signing_key = derived
    return derived


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _csrf(key: bytes, nonce: str) -> str:
    return _sign(key, f"csrf.{nonce}")


def new_session_cookie(request: Request, *, now: float | None = None) -> tuple[str, Session]:
    """A fresh signed cookie value and its session. Raises ``RuntimeError`` without an admin key."""
    key = _signing_key(request)
    if key is None:
        raise RuntimeError("no admin key is configured")
    issued = int(time.time() if now is None else now)
    nonce = secrets.token_urlsafe(18)
    payload = f"{issued}.{nonce}"
    return f"{payload}.{_sign(key, payload)}", Session(nonce, issued, _csrf(key, nonce))


def read_session(request: Request, *, now: float | None = None) -> Session | None:
    """The request's valid session, or ``None`` (no cookie, a bad signature, expired, no admin key)."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    key = _signing_key(request)
    if key is None:
        return None
    issued_text, nonce, signature = parts
    if not hmac.compare_digest(signature, _sign(key, f"{issued_text}.{nonce}")):
        return None
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    if age < 0 or age > SESSION_MAX_AGE_S:
        return None
    return Session(nonce, issued, _csrf(key, nonce))


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def _revoked_key(nonce: str) -> str:
    return f"console:revoked:{nonce}"


async def revoked(request: Request, session: Session) -> bool:
    """Whether ``session`` was ended by a logout (in the stack's KV: every process sees it with Redis)."""
    kv = request.app.state.stack.kv
    return await kv.get(_revoked_key(session.nonce)) is not None


async def revoke(request: Request, session: Session) -> None:
    """End ``session`` for good: its cookie is refused from now on, also if replayed, until it expires."""
    left = max(1.0, session.issued_at + SESSION_MAX_AGE_S - time.time())
    await request.app.state.stack.kv.set_if_absent(_revoked_key(session.nonce), 1, ttl_s=left + 60)


async def require_session(request: Request) -> Session:
    """The session of a console page request; raises :class:`LoginRequired` without one."""
    session = read_session(request)
    if session is not None and await revoked(request, session):
        session = None
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return session


def same_origin(request: Request) -> bool:
    """False when the request's ``Origin`` (or, lacking it, ``Referer``) names another site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    parts = urlsplit(origin)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)


def check_csrf(request: Request, session: Session, token: str | None) -> None:
    """Raise :class:`CsrfRejected` unless ``token`` is the session's and the request is same-origin."""
    if not token or not hmac.compare_digest(token, session.csrf) or not same_origin(request):
        raise CsrfRejected()


async def session_principal(request: Request) -> Principal | None:
    """The admin, for a console call to ``/v1`` with a valid session cookie and its CSRF header."""
    token = request.headers.get(CSRF_HEADER)
    if not token:
        return None
    session = read_session(request)
    if session is None or not hmac.compare_digest(token, session.csrf) or not same_origin(request):
        return None
    if await revoked(request, session):
        return None
    return ADMIN


def safe_next(path: str | None) -> str:
    """A local path to return to after login (never another site: ``//evil`` and ``http:`` are refused)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/exchanges"
    return path


#: The largest console form accepted (a correction may be long; nothing else is).
MAX_FORM_BYTES = 256 * 1024


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a repeated field).

    The console's forms are all URL-encoded, so this avoids a multipart parser dependency.
    """
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
