"""The playground: chat with any model or route, streaming, with parameters, two panes side by side.

Each pane may start its system prompt from a registered prompt version (its template text, to
edit or fill in). The page itself is static HTML; ``static/console.js`` streams each pane from the server's own
``POST /v1/chat/completions`` (``stream: true``), authenticated by the console session and its
CSRF header, so a playground exchange is an exchange like any other (traced, limited, listed).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.server.console.auth import require_session
from aiestack.server.console.render import page
from aiestack.stores.base import ExchangeStore
from aiestack.stores.prompts import PromptStore

router = APIRouter(include_in_schema=False)


def targets(stack: Stack) -> list[tuple[str, str]]:
    """Every model and route a request may name, as (name, kind), the default first."""
    models = [(e.name, "model") for e in stack.models]
    known = {name for name, _ in models}
    routes = [(name, "route") for name in stack.routes.names if name not in known]
    everything = models + routes
    default = stack.settings.default_model
    return sorted(everything, key=lambda item: item[0] != default)


def prompt_choices(store: ExchangeStore, *, per_prompt: int = 5) -> list[tuple[str, str]]:
    """Registered prompts to start a pane's system prompt from: (``name@label`` or ``name@vN``, template).

    Every label, then the newest ``per_prompt`` versions of each prompt (at most 50 prompts).
    """
    if not isinstance(store, PromptStore):
        return []
    out: list[tuple[str, str]] = []
    for summary in store.list_prompts()[:50]:
        versions = {v.version: v for v in store.prompt_versions(summary.name)}
        for label, number in sorted(summary.labels.items()):
            if number in versions:
                out.append((f"{summary.name}@{label}", versions[number].template))
        for number in sorted(versions, reverse=True)[:per_prompt]:
            out.append((f"{summary.name}@v{number}", versions[number].template))
    return out


@router.get("/playground")
async def playground(request: Request) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    prompts = await asyncio.to_thread(prompt_choices, stack.store)
    return page(request, "playground.html", session, title="Playground", targets=targets(stack), prompts=prompts)
