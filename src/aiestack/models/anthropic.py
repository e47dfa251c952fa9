"""The ``anthropic`` provider: Anthropic's Messages API, to and from the chat shape.

Requests are translated by :mod:`aiestack.models.anthropic_wire` and always streamed; the last
delta carries the finish reason, usage (from ``message_start`` and ``message_delta``) and the
timing measured here. An ``error`` event inside the stream (``overloaded_error`` and the like)
becomes the matching :class:`~aiestack.errors.ProviderError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from aiestack.errors import ProviderError, StreamBroken
from aiestack.models import http
from aiestack.models.anthropic_wire import EventParser, messages_body
from aiestack.models.base import Health, TimingMeter
from aiestack.types import ChatRequest, Delta

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"


class AnthropicModelConfig(BaseModel):
    """A ``[models.NAME]`` table with ``provider = "anthropic"`` in aiestack.toml."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["anthropic"]
    model: str | None = Field(
        default=None, description="The upstream model id; defaults to the table's NAME."
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="The API root (without /v1).")
    api_key_env: str | None = Field(
        default="ANTHROPIC_API_KEY", description="Environment variable holding the API key; empty for none."
    )
    anthropic_version: str = Field(default=DEFAULT_VERSION, description="The anthropic-version header.")
    max_tokens_default: int = Field(
        default=1024, ge=1, description="max_tokens when a request sets none (the Messages API requires it)."
    )
    timeout_s: float = Field(
        default=60.0, gt=0, description="Connect timeout, and the longest wait between chunks."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers, e.g. anthropic-beta for beta features."
    )
    max_connections: int = Field(default=100, ge=1, description="Size of the connection pool.")

    def upstream(self, name: str) -> str:
        """The model id asked of the upstream for the configured ``name``."""
        return self.model or name

    def create(
        self, environ: Mapping[str, str] | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> AnthropicChatModel:
        """A provider for this config, its key read from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        return AnthropicChatModel(
            base_url=self.base_url,
            api_key=env.get(self.api_key_env) if self.api_key_env else None,
            api_key_env=self.api_key_env or None,
            anthropic_version=self.anthropic_version,
            max_tokens_default=self.max_tokens_default,
            timeout_s=self.timeout_s,
            headers=self.headers,
            max_connections=self.max_connections,
            transport=transport,
        )


class AnthropicChatModel:
    """A :class:`~aiestack.models.base.ChatModel` for the Anthropic Messages API.

    A ``base_url`` given with a trailing ``/v1`` is accepted (the API paths add it themselves).
    One pooled client per instance; :meth:`aclose` releases it.
    """

    provider = "anthropic"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        anthropic_version: str = DEFAULT_VERSION,
        max_tokens_default: int = 1024,
        timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        api_key_env: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._max_tokens_default = max_tokens_default
        key = {"x-api-key": api_key} if api_key else {}
        self._upstream = http.Upstream(
            provider=self.provider,
            base_url=self.base_url,
            timeout_s=timeout_s,
            api_key_env=api_key_env,
            secret=api_key,
        )
        self._client = http.make_client(
            base_url=self.base_url,
            timeout_s=timeout_s,
            headers={**key, "anthropic-version": anthropic_version, **(headers or {})},
            max_connections=max_connections,
            transport=transport,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Stream the answer; the last delta carries finish reason, usage and timing."""
        body = messages_body(request, max_tokens_default=self._max_tokens_default)
        meter = TimingMeter()
        meter.began()
        parser = EventParser()
        chunks = 0
        events = http.stream_events(self._client, "v1/messages", body, self._upstream)
        async with aclosing(events):
            async for event in events:
                if parser.done:
                    continue  # read to the end of the body so the connection returns to the pool
                data = http.event_json(event, self._upstream)
                if event.event == "error" or data.get("type") == "error":
                    message, kind = http.error_in(data) or (event.data, None)
                    raise http.event_error(self._upstream, message, kind)
                delta = parser.feed(data)
                if delta.text or delta.tool_calls:
                    meter.token()
                    chunks += 1
                    yield delta
        if parser.finish_reason is None:
            raise StreamBroken(
                f"the stream from {self.base_url} ended before the answer finished (no stop_reason)",
                provider=self.provider,
                hint="Retry the request; if it keeps happening, check the network between here and Anthropic.",
            )
        usage = parser.usage
        yield Delta(
            finish_reason=parser.finish_reason,
            usage=usage,
            timing=meter.timing(usage.output_tokens or chunks),
        )

    async def check(self, model: str) -> Health:
        """GET ``/v1/models`` with the key: reachable and authorised if 200.

        Aliases such as ``claude-3-5-haiku-latest`` are not in the list (it names dated ids),
        so a model missing from it is reported in the detail, not as a failure.
        """
        started = time.perf_counter()
        try:
            listing = await http.get_json(self._client, "v1/models", self._upstream)
        except ProviderError as exc:
            return Health(ok=False, detail=str(exc), latency_ms=(time.perf_counter() - started) * 1000)
        detail = http.listing_detail(listing, model)
        return Health(ok=True, detail=detail, latency_ms=(time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        await self._client.aclose()
