"""Pydantic bodies of the OpenAI-compatible API (the edge; the core speaks dataclasses)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Integer bounds checked at the edge: a value past them is a 400 naming the field, never a 500 from a
#: 64-bit column, a C extension or a provider. Token counts fit a signed 32-bit int (llama.cpp, vLLM);
#: a seed fits a signed 64-bit int (OpenAI's own range).
MAX_TOKENS = 2**31 - 1
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
MAX_TOP_K = 2**31 - 1
MAX_DIMENSIONS = 65_536


class _Body(BaseModel):
    # Clients (the OpenAI SDK among them) send fields we do not use; ignoring them keeps them working.
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Body):
    url: str
    detail: str | None = None


class ContentPartIn(_Body):
    type: Literal["text", "image_url", "input_text"]
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCallIn(_Body):
    name: str
    arguments: str = ""


class ToolCallIn(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPartIn] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class JSONSchemaFormat(_Body):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormatIn(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Body):
    include_usage: bool | None = False


class ChatCompletionRequest(_Body):
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)  # not in OpenAI's API; vLLM and llama.cpp accept it
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: int | None = Field(default=None, ge=1, le=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: ResponseFormatIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


class CompletionRequest(_Body):
    """The legacy ``/v1/completions`` body: a raw prompt."""

    model: str = Field(min_length=1)
    prompt: str | list[str]
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: int | None = Field(default=None, ge=1, le=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1)
    # Token arrays are accepted by the schema so that the answer can say why they are refused.
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=MAX_DIMENSIONS)
    user: str | None = None


MAX_LIMIT = 10**12
MAX_BUDGET_USD = 1e12


class KeyCreateRequest(_Body):
    """``POST /admin/keys``: a new virtual key for a tenant, with optional limits and model allowlist."""

    model_config = ConfigDict(extra="forbid")  # a misspelt limit must not silently mean "no limit"

    tenant: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    # Upper bounds keep values storable (SQL integers are 64-bit) and catch unit mistakes.
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    budget_day_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    budget_month_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    models: list[str] = Field(default_factory=list, max_length=1000)
