"""Who is calling, as the stack's :class:`~aiestack.gateway.keys.Authenticator` decides.

The server holds no auth logic of its own. With ``gateway.auth = "auto"`` (the default) a fresh
install with no keys serves everyone as the anonymous ``default`` tenant, so any OpenAI client
works at once; as soon as a key exists, every ``/v1`` route needs one.
"""

from __future__ import annotations

from starlette.requests import Request

from aiestack.build import Stack
from aiestack.errors import AiestackError, AuthError
from aiestack.gateway.keys import FailedAuthentications, Principal
from aiestack.server.console.auth import session_principal


def client_address(request: Request) -> str:
    """The client's address: the peer's, or what a trusted proxy forwarded (see ``gateway.trusted_proxies``)."""
    return request.client.host if request.client else "unknown"


def failed_authentications(stack: Stack) -> FailedAuthentications:
    gateway = stack.settings.gateway
    return FailedAuthentications(
        stack.kv, limit=gateway.auth_failure_limit, window_s=gateway.auth_failure_window_s, fail_open=gateway.limits_fail_open
    )


async def principal(stack: Stack, request: Request) -> Principal:
    """The caller of ``request``; raises :class:`~aiestack.errors.AuthError` (401) for a missing or bad key,
    and :class:`~aiestack.gateway.keys.TooManyFailedAuthentications` (429) for an address that failed too often.

    A request without a key but with a console session cookie and its CSRF header (the web
    console's playground) is the admin.
    """
    authorization = request.headers.get("authorization")
    if authorization is None and "cookie" in request.headers:
        who = await session_principal(request)
        if who is not None:
            return who
    return await _authenticate(stack, request, authorization)


async def admin(stack: Stack, request: Request) -> Principal:
    """The caller, who must hold the admin key (401 without a valid key, 403 with another one).

    Any failure counts against the client's address, like a failed key: the admin key cannot be
    guessed around the console's login limit by sending it as a Bearer token.
    """
    authorization = request.headers.get("authorization")
    who = await _authenticate(stack, request, authorization)
    try:
        stack.auth.require_admin(who)
    except AiestackError:
        if authorization is not None:
            await failed_authentications(stack).failed(client_address(request))
        raise
    return who


async def _authenticate(stack: Stack, request: Request, authorization: str | None) -> Principal:
    """Authenticate, counting a failed key against the client's address (a request without one is not a guess)."""
    if authorization is None:
        return await stack.auth.authenticate(None)
    attempts, client = failed_authentications(stack), client_address(request)
    await attempts.check(client)
    try:
        return await stack.auth.authenticate(authorization)
    except AuthError:
        await attempts.failed(client)
        raise
