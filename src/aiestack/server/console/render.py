"""Rendering console pages: the Jinja2 environment (autoescaped), formatting filters, the page helper."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from aiestack.server.console.auth import CSRF_FIELD, Session

#: The pages in the navigation bar: (path, label).
NAV = (
    ("/exchanges", "Exchanges"),
    ("/dashboard", "Metrics"),
    ("/playground", "Playground"),
    ("/evals", "Evals"),
    ("/feedback", "Feedback"),
    ("/prompts", "Prompts"),
    ("/agents", "Agents"),
    ("/flywheel", "Flywheel"),
)

#: Sent with every console page: no framing by other sites, no inline script from data, no sniffing.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "–"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.1f} ms"


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def fmt_num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def to_pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def create_environment() -> Environment:
    """A fresh environment (one per app): templates from the package, autoescaping every ``.html``."""
    env = Environment(
        loader=PackageLoader("aiestack.server.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=fmt_time, ms=fmt_ms, usd=fmt_usd, num=fmt_num, pct=fmt_pct, pretty_json=to_pretty_json
    )
    env.globals["nav"] = NAV
    env.globals["csrf_field"] = CSRF_FIELD
    return env


def page(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with the session's CSRF token and the current path."""
    env: Environment = request.app.state.console_templates
    html = env.get_template(template).render(
        request_path=request.url.path,
        csrf=session.csrf if session is not None else "",
        logged_in=session is not None,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def svg(markup: str) -> Markup:
    """An SVG string drawn by :mod:`aiestack.server.console.charts` (which escapes what it draws)."""
    return Markup(markup)
