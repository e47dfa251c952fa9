"""Mounting the console on the app: login and logout, static assets, and every page's router.

The console lives at ``/`` beside ``/v1``, ``/health``, ``/ready`` and ``/metrics``; its pages are
``/exchanges``, ``/dashboard`` (the metrics charts: ``/metrics`` stays Prometheus'), ``/playground``,
``/evals``, ``/feedback``, ``/prompts``, ``/agents`` and ``/flywheel``, its assets under ``/static/console``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from aiestack.gateway.keys import TooManyFailedAuthentications
from aiestack.server.auth import client_address, failed_authentications
from aiestack.server.console import (
    pages_agents,
    pages_evals,
    pages_exchanges,
    pages_feedback,
    pages_flywheel,
    pages_metrics,
    pages_playground,
)
from aiestack.server.console.auth import (
    CSRF_FIELD,
    CsrfRejected,
    LoginRequired,
    admin_key_from_env,
    check_csrf,
    clear_session_cookie,
    form_fields,
    new_session_cookie,
    read_session,
    require_session,
    revoke,
    safe_next,
    same_origin,
    set_session_cookie,
)
from aiestack.server.console.render import create_environment, page

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index(request: Request) -> Response:
    await require_session(request)
    return RedirectResponse("/exchanges", status_code=303)


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    stack = request.app.state.stack
    configured = admin_key_from_env(stack.settings.gateway.admin_key_env) is not None
    return page(
        request,
        "login.html",
        None,
        next=safe_next(next),
        error=None,
        configured=configured,
        admin_key_env=stack.settings.gateway.admin_key_env,
    )


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form_fields(request)
    key, next = fields.get("key", ""), fields.get("next", "/exchanges")
    stack = request.app.state.stack
    env_name = stack.settings.gateway.admin_key_env
    configured = admin_key_from_env(env_name) is not None
    error: str | None = None
    attempts = failed_authentications(stack)
    client = client_address(request)
    try:
        await attempts.check(client)
    except TooManyFailedAuthentications as exc:
        wait = int(exc.retry_after)
        refused = page(
            request, "login.html", None, status_code=429, next=safe_next(next),
            error=f"Too many failed logins from this address: try again in {wait} seconds.",
            configured=configured, admin_key_env=env_name,
        )
        refused.headers["Retry-After"] = str(wait)
        return refused
    if not same_origin(request):
        error = "This form was sent from another site."
    elif not configured:
        error = f"No admin key is configured: set {env_name} and restart the server."
    else:
        try:
            who = await stack.auth.authenticate(f"Bearer {key.strip()}")
        except Exception:  # an invalid key is an AuthError; any failure here is a refused login
            who = None
        if who is None or not who.is_admin:
            error = "That is not the admin key."
            await attempts.failed(client)
    if error is not None:
        return page(
            request, "login.html", None, status_code=401, next=safe_next(next), error=error,
            configured=configured, admin_key_env=env_name,
        )
    await attempts.cleared(client)
    value, _ = new_session_cookie(request)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, request, value)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = await require_session(request)
    check_csrf(request, session, (await form_fields(request)).get(CSRF_FIELD))
    await revoke(request, session)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response)
    return response


def mount_console(app: FastAPI) -> None:
    """Add the console's pages, login and assets to ``app`` (call once, when building the app)."""
    app.state.console_templates = create_environment()
    app.mount("/static/console", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(router)
    for module in (pages_exchanges, pages_metrics, pages_playground, pages_evals, pages_feedback, pages_agents, pages_flywheel):
        app.include_router(module.router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: CsrfRejected) -> Response:
        return page(
            request, "error.html", read_session(request), status_code=403, title="Form rejected",
            message="This form's security token is missing or stale, or it came from another site.",
            hint="Reload the page and try again.",
        )
