"""The Prompt stage: a route's ``prompt = "name@label"`` resolved and rendered as the system prompt.

For a request whose route plan carries a prompt spec (``routes.NAME.prompt``, parsed by
:func:`route_prompt_specs` at build time; see :mod:`aiestack.prompts.registry`), the stage

1. picks the arm of an A/B split for the request's bucket (its ``user``, else its key, else its
   first user message: stable for a whole conversation);
2. resolves the reference to a version (label lookups cached ≤ 1 s: moving a label takes
   effect within a second, without a restart);
3. renders the template with the request's ``metadata`` as variables, plus ``tenant``,
   ``route``, ``user`` and ``today`` (UTC ``YYYY-MM-DD``), the request's own values winning;
4. puts the text first in the system message (merged with a system message the client sent,
   which follows it after a blank line), and records ``aiestack.prompt.name``,
   ``aiestack.prompt.version`` and ``aiestack.prompt.label`` in the exchange's attributes, which
   the exchange store keeps (usage counts per version come from them).

A missing variable is the client's error (400, naming it); a prompt or label that does not
exist is the operator's (500, saying which command fixes it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from aiestack.errors import AiestackError
from aiestack.pipeline import Next
from aiestack.prompts.registry import PromptRegistry, PromptSpec, choose, parse_spec
from aiestack.prompts.templates import Renderer
from aiestack.stores.prompts import PROMPT_LABEL_ATTR, PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR, PromptVersion
from aiestack.types import Exchange, Message


class PromptUnavailable(AiestackError):
    """The route's prompt (or its label) does not exist: the operator must push or label it."""

    code = "prompt_unavailable"


def route_prompt_specs(prompts: Mapping[str, str | None]) -> dict[str, PromptSpec]:
    """``{route: spec}`` from ``{route: routes.NAME.prompt}``; raises ConfigError naming the key."""
    return {
        route: parse_spec(text, key=f"routes.{route}.prompt") for route, text in prompts.items() if text
    }


def bucket(ex: Exchange) -> str:
    """What an A/B split is stable for: the user, else the key, else the conversation's first user message."""
    if ex.request.user:
        return f"user:{ex.tenant}:{ex.request.user}"
    if ex.key_id:
        return f"key:{ex.key_id}"
    first = next((m.text for m in ex.request.messages if m.role == "user"), "")
    return "conversation:" + hashlib.sha256(f"{ex.tenant}\x00{first}".encode()).hexdigest()


class Prompt:
    """Renders the route's registered prompt into the request (see the module docstring)."""

    name = "prompt"

    def __init__(self, registry: PromptRegistry) -> None:
        self._registry = registry
        self._renderer = Renderer()

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        plan = ex.plan
        spec = plan.part(PromptSpec) if plan is not None else None
        if spec is None or plan is None or plan.route is None:
            return await call_next(ex)
        route = plan.route
        ref = choose(spec, bucket(ex))
        version = self._registry.cached(ref)
        if version is None:
            version = await asyncio.to_thread(self._registry.load, ref)
        if version is None:
            missing = await asyncio.to_thread(self._registry.missing, ref)
            raise PromptUnavailable(f"Route '{route}': {missing.message}", hint=missing.hint)
        text = self._renderer.render(version, self._variables(ex, route))
        attributes = {
            **ex.attributes,
            PROMPT_NAME_ATTR: version.name,
            PROMPT_VERSION_ATTR: version.version,
            PROMPT_LABEL_ATTR: ref.label if ref.label is not None else str(ref.version),
        }
        request = dataclasses.replace(ex.request, messages=_with_system(text, ex.request.messages))
        return await call_next(dataclasses.replace(ex, request=request, attributes=attributes))

    def _variables(self, ex: Exchange, route: str) -> dict[str, Any]:
        builtins: dict[str, Any] = {
            "tenant": ex.tenant,
            "route": route,
            "user": ex.request.user,
            "today": today(),
        }
        return {**builtins, **ex.request.metadata}


def _with_system(text: str, messages: tuple[Message, ...]) -> tuple[Message, ...]:
    if messages and messages[0].role == "system" and messages[0].text:
        merged = Message(role="system", content=f"{text}\n\n{messages[0].text}")
        return (merged, *messages[1:])
    return (Message(role="system", content=text), *messages)


def today() -> str:
    """The ``today`` a template sees: the UTC date, ``YYYY-MM-DD``."""
    return dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%d")


def render_version(version: PromptVersion, variables: Mapping[str, Any]) -> str:
    """Render one version outside a request (the CLI's ``prompts show --render``, the playground).

    ``today`` is there as at request time (the given variables win); ``tenant``, ``route`` and
    ``user`` belong to a request, so they must be given."""
    return Renderer().render(version, {"today": today(), **variables})
