"""Who is calling, as the stack's :class:`~aiestack.gateway.keys.Authenticator` decides.

The server holds no auth logic of its own. With ``gateway.auth = "auto"`` (the default) a fresh
install with no keys serves everyone as the anonymous ``default`` tenant, so any OpenAI client
works at once; as soon as a key exists, every ``/v1`` route needs one.
"""

from __future__ import annotations

from starlette.requests import Request

from aiestack.build import Stack
from aiestack.gateway.keys import Principal
from aiestack.server.console.auth import session_principal


async def principal(stack: Stack, request: Request) -> Principal:
    """The caller of ``request``; raises :class:`~aiestack.errors.AuthError` (401) for a missing or bad key.

    A request without a key but with a console session cookie and its CSRF header (the web
    console's playground) is the admin.
    """
    authorization = request.headers.get("authorization")
    if authorization is None and "cookie" in request.headers:
        who = session_principal(request)
        if who is not None:
            return who
    return await stack.auth.authenticate(authorization)


async def admin(stack: Stack, request: Request) -> Principal:
    """The caller, who must hold the admin key (401 without a valid key, 403 with another one)."""
    who = await stack.auth.authenticate(request.headers.get("authorization"))
    stack.auth.require_admin(who)
    return who
