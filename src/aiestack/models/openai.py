"""The ``openai`` provider: any OpenAI-compatible chat-completions endpoint.

OpenAI itself, vLLM, Ollama, llama.cpp server, TGI, Together, Groq... all speak the same
streaming format, so one provider serves them; what differs (an API key or none, ``top_k``,
the name of ``max_tokens``) is configuration. A streamed request is streamed from the upstream,
with TTFT/TPOT measured here; a request for a whole answer (``request.stream`` false) is asked
of the upstream whole, one JSON body, unless the model's ``whole_upstream`` is off (then it is
streamed too). Either way the last delta carries the finish reason, usage and timing.
Wire translation lives in :mod:`aiestack.models.openai_wire`; HTTP and error mapping in
:mod:`aiestack.models.http`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from aiestack.errors import ProviderError, ProviderUnavailable, StreamBroken
from aiestack.models import http
from aiestack.models.base import Health, TimingMeter
from aiestack.models.openai_wire import ChunkParser, MaxTokensField, WireOptions, answer_delta, chat_body
from aiestack.types import ChatRequest, Delta, Timing, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIModelConfig(BaseModel):
    """A ``[models.NAME]`` table with ``provider = "openai"`` in aiestack.toml.

    For a local server without keys (vLLM, Ollama, llama.cpp) set ``base_url`` and
    ``api_key_env = ""``; a key variable that is configured but unset also sends no key.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai"]
    model: str | None = Field(
        default=None, description="The upstream model id; defaults to the table's NAME."
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="The API root, usually ending in /v1.")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY", description="Environment variable holding the API key; empty for none."
    )
    timeout_s: float = Field(
        default=60.0, gt=0, description="Connect timeout, and the longest wait between chunks."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers sent with every request."
    )
    whole_upstream: bool = Field(
        default=True,
        description="Ask the upstream for a whole answer (one JSON body) when the request wants one and no "
        "first-token limit applies; false: always stream from the upstream (TTFT and TPOT measured).",
    )
    whole_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest wait for an answer asked for whole (it arrives only once fully generated).",
    )
    max_connections: int = Field(default=100, ge=1, description="Size of the connection pool.")
    max_tokens_field: MaxTokensField = Field(
        default="max_tokens", description="Use max_completion_tokens for OpenAI's reasoning models."
    )
    send_top_k: bool = Field(
        default=False, description="Send top_k (vLLM and llama.cpp accept it; OpenAI does not)."
    )
    local: bool = Field(
        default=False,
        description="Self-hosted (vLLM, Ollama...): costs 0 unless [pricing] gives this model a price.",
    )

    def upstream(self, name: str) -> str:
        """The model id asked of the upstream for the configured ``name``."""
        return self.model or name

    def create(
        self, environ: Mapping[str, str] | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> OpenAIChatModel:
        """A provider for this config, its key read from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        return OpenAIChatModel(
            base_url=self.base_url,
            api_key=env.get(self.api_key_env) if self.api_key_env else None,
            api_key_env=self.api_key_env or None,
            timeout_s=self.timeout_s,
            headers=self.headers,
            max_connections=self.max_connections,
            options=WireOptions(max_tokens_field=self.max_tokens_field, send_top_k=self.send_top_k),
            whole_timeout_s=self.whole_timeout_s if self.whole_upstream else None,
            transport=transport,
        )


class OpenAIChatModel:
    """A :class:`~aiestack.models.base.ChatModel` for an OpenAI-compatible base URL.

    One pooled :class:`httpx.AsyncClient` per instance serves every request (and every model
    the endpoint offers); :meth:`aclose` releases it. ``api_key_env`` only names the variable in
    error hints; ``transport`` lets tests substitute :class:`httpx.MockTransport`.
    ``whole_timeout_s`` (the longest wait for an answer asked for whole) turns on asking for whole
    answers; ``None`` streams every request from the upstream.
    """

    provider = "openai"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        options: WireOptions | None = None,
        api_key_env: str | None = None,
        whole_timeout_s: float | None = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._options = options or WireOptions()
        self._upstream = http.Upstream(
            provider=self.provider,
            base_url=self.base_url,
            timeout_s=timeout_s,
            api_key_env=api_key_env,
            secret=api_key,
        )
        self._whole = (
            None
            if whole_timeout_s is None
            else dataclasses.replace(self._upstream, timeout_s=whole_timeout_s, timeout_key="whole_timeout_s")
        )
        self._client = http.make_client(
            base_url=self.base_url,
            timeout_s=timeout_s,
            headers={**auth, **(headers or {})},
            max_connections=max_connections,
            transport=transport,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Stream the answer; the last delta carries finish reason, usage and timing.

        Timing counts one output token per content chunk when the upstream reports no usage
        (servers send about one token per chunk); the usage itself is then left at zero. A
        request for a whole answer is asked for whole when the model allows it (see
        :meth:`_answer`): one delta then carries everything.
        """
        if not request.stream and self._whole is not None:
            yield await self._answer(request, self._whole)
            return
        body = chat_body(request, self._options)
        meter = TimingMeter()
        meter.began()
        parser = ChunkParser()
        chunks = 0
        ended = False
        events = http.stream_events(self._client, "chat/completions", body, self._upstream)
        async with aclosing(events):
            async for event in events:
                # After [DONE], read on to the end of the body: a response closed before its end
                # cannot go back to the pool, and the next request would pay for a new connection.
                data = event.data
                if ended or (data[:1] != "{" and data.strip() == "[DONE]"):
                    ended = True
                    continue
                chunk = http.event_json(event, self._upstream)
                if (failure := http.error_in(chunk)) is not None:
                    raise http.event_error(self._upstream, *failure)
                delta = parser.feed(chunk)
                if delta.text or delta.tool_calls:
                    meter.token()
                    chunks += 1
                if delta.text or delta.tool_calls or delta.logprobs:
                    yield delta
        if parser.finish_reason is None:
            raise StreamBroken(
                f"the stream from {self.base_url} ended before the answer finished (no finish_reason)",
                provider=self.provider,
                hint="Retry the request; if it keeps happening, check the server's logs.",
            )
        usage = parser.usage or Usage()
        yield Delta(
            finish_reason=parser.finish_reason,
            usage=usage,
            timing=meter.timing(usage.output_tokens or chunks),
        )

    async def _answer(self, request: ChatRequest, upstream: http.Upstream) -> Delta:
        """The answer asked for whole, as one delta with its finish reason, usage and timing.

        Its TTFT is the time to the whole answer (nothing arrives before it) and its TPOT is
        unknown (``None``).
        """
        started = time.perf_counter()
        answer = await http.answer_json(
            self._client, "chat/completions", chat_body(request, self._options, stream=False), upstream
        )
        elapsed = (time.perf_counter() - started) * 1000
        delta = answer_delta(answer, Timing(ttft_ms=elapsed, total_ms=elapsed))
        if delta is None:
            raise ProviderUnavailable(
                f"{self.base_url} answered without a choice: {upstream.redact(str(answer))[:200]!r}",
                provider=self.provider,
                hint="Retry the request; if it keeps happening, check the server's logs.",
            )
        return delta

    async def check(self, model: str) -> Health:
        """GET ``/models``: reachable and authorised if 200; the detail says if ``model`` is listed."""
        started = time.perf_counter()
        try:
            listing = await http.get_json(self._client, "models", self._upstream)
        except ProviderError as exc:
            return Health(ok=False, detail=str(exc), latency_ms=_ms_since(started))
        return Health(ok=True, detail=http.listing_detail(listing, model), latency_ms=_ms_since(started))

    async def aclose(self) -> None:
        await self._client.aclose()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
