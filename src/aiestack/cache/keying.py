"""Cache keys: the canonical form of a request, its exact hash, and the semantic partition.

Two requests share an *exact* key when they would get the same answer from a deterministic
model: same tenant, same route (what the request names as its model), same route fingerprint
(prompt and collection versions), same messages and the same sampling parameters that change the
answer. What does not change the answer is left out: ``user``, ``stream``, ``metadata``, and the
order of ``stop`` sequences.

A *semantic* lookup compares only the last user turn by meaning; everything else must match
exactly, so it forms the *partition* the vector search runs in: tenant, route, fingerprint,
parameters and a hash of the conversation before the last user turn (system prompt included).
A key never crosses tenants because the tenant is part of both.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import orjson

from aiestack.types import ChatRequest, Message, Params

#: Bumped when the canonical form changes, so old entries stop matching instead of misleading.
KEY_VERSION = 1

_SPACE = re.compile(r"\s+")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _text(text: str) -> str:
    """Unicode-normalised (NFC) and stripped: invisible differences never split a key."""
    return unicodedata.normalize("NFC", text).strip()


def _message(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        content: Any = _text(message.content)
    else:
        content = [
            {"type": p.type, "text": _text(p.text) if p.text is not None else None, "url": p.url}
            for p in message.content
        ]
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [[t.id, t.name, t.arguments] for t in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def canonical_params(params: Params) -> dict[str, Any]:
    """The parameters that change an answer, with ``None``/empty ones left out and ``stop`` sorted."""
    out: dict[str, Any] = {}
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tool_choice",
    ):
        value = getattr(params, name)
        if value is not None:
            out[name] = _jsonable(value)
    if params.stop:
        out["stop"] = sorted(params.stop)
    if params.response_format is not None and params.response_format.type != "text":
        out["response_format"] = _jsonable(params.response_format)
    if params.tools:
        out["tools"] = _jsonable(params.tools)
    if params.logprobs:
        out["logprobs"] = [True, params.top_logprobs]
    return out


def exact_key(request: ChatRequest, *, tenant: str, fingerprint: str = "") -> str:
    """The exact-cache key of ``request``: a SHA-256 over its canonical form (hex)."""
    return _digest(
        {
            "v": KEY_VERSION,
            "kind": "exact",
            "tenant": tenant,
            "route": request.model,
            "fingerprint": fingerprint,
            "messages": [_message(m) for m in request.messages],
            "params": canonical_params(request.params),
        }
    )


def split_last_user_turn(messages: Sequence[Message]) -> tuple[Sequence[Message], Message] | None:
    """``(earlier, last)`` when the conversation ends with a user turn of plain text, else None.

    Only such requests are looked up by meaning: a conversation ending with a tool result or an
    image is answered from what exactly is in it.
    """
    if not messages or messages[-1].role != "user":
        return None
    last = messages[-1]
    if not isinstance(last.content, str) and any(p.type != "text" for p in last.content):
        return None
    if not last.text.strip():
        return None
    return messages[:-1], last


def semantic_partition(
    request: ChatRequest, earlier: Sequence[Message], *, tenant: str, fingerprint: str = ""
) -> str:
    """The partition a semantic lookup searches: everything but the last user turn, hashed."""
    return _digest(
        {
            "v": KEY_VERSION,
            "kind": "semantic",
            "tenant": tenant,
            "route": request.model,
            "fingerprint": fingerprint,
            "earlier": [_message(m) for m in earlier],
            "params": canonical_params(request.params),
        }
    )


def normalise_query(text: str) -> str:
    """The form of a user turn that is embedded: NFKC, lower case, single spaces, no edge punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _SPACE.sub(" ", text).strip()
    return text.strip(" \t.!?;:,")


def fingerprint_of(*parts: object) -> str:
    """A short stable hash of any JSON-able parts (route config, prompt version, collection version)."""
    return _digest(_jsonable(list(parts)))[:16]
