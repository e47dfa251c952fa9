"""A fake OpenAI-compatible upstream for multi-process tests, failure drills and soak runs.

It answers ``/v1/chat/completions`` (whole or streamed), ``/v1/embeddings`` and ``/v1/models``
with no model behind them, so that tests measure and exercise the gateway, not a model:

- a chat answer is ``"<model> answers: <last user text>"`` (at most 200 characters of it), so a
  client can tell which upstream model a route chose and which question was answered; usage
  counts characters / 4 in and one token per streamed piece out;
- a system message's lines that start with ``echo:`` are repeated after the answer, in brackets
  (how a test sees which prompt version a gateway rendered);
- a last user turn containing ``[slow]`` takes 10 s, as a long answer would: streamed, 40 pieces
  0.25 s apart (long enough to kill a gateway worker mid-stream); asked for whole, the same 40 pieces
  answered at once after those 10 s (long enough to see a call in flight from another process);
- a conversation whose first user turn with it contains ``[agent steps=N parallel=P]`` is an agent
  being scripted: while fewer than N assistant turns follow that turn (and the request offers
  ``tools``), the answer is P calls of the first tool (ids ``call_<step>_<i>``), each with arguments made
  from the tool's schema (every required property: integer → the step, number → the step + 0.5,
  string → ``"s<step>"``, boolean → true, else null); then the answer ``done after N steps`` (as a
  call of the ``final_answer`` tool with ``{"answer": ...}`` when one is offered). Every
  agent framework driven by it (aiestack's loop and its anchors in ``bench/agents.py``) receives the
  same tool calls;
- an embedding is a hashed bag of the text's lower-cased words (64 dimensions, unit length):
  texts with the same words get the same vector, texts sharing most words a high cosine, which
  is what a semantic cache or router needs to be testable without a neural model;
- ``GET /stats`` says how many chat and embedding calls it has answered.

Run it as its own process, bound to the loopback interface::

    python -m aiestack.testing.upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SLOW_MARKER = "[slow]"
FINAL_ANSWER_TOOL = "final_answer"  # frameworks that end a run with a tool call (smolagents)
AGENT_MARKER = re.compile(r"\[agent steps=(\d+)(?: parallel=(\d+))?\]")
SLOW_PIECES = 40
SLOW_DELAY_S = 0.25
EMBEDDING_DIM = 64
_WORD = re.compile(r"\w+")


@dataclass
class _Counts:
    chat: int = 0
    embeddings: int = 0


def embed(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """The hashed bag-of-words vector of ``text`` (unit length; all zeros but one for no words)."""
    vector = [0.0] * dim
    words = _WORD.findall(text.lower()) or [""]
    for word in words:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "big") % dim] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _echoed_system_lines(body: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for message in body.get("messages") or []:
        if message.get("role") == "system" and isinstance(message.get("content"), str):
            lines += [line.strip() for line in message["content"].splitlines() if line.strip().startswith("echo:")]
    return lines


def _argument(schema: dict[str, Any], step: int) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        return step
    if kind == "number":
        return step + 0.5
    if kind == "string":
        return f"s{step}"
    if kind == "boolean":
        return True
    return None


def _agent_marker(body: dict[str, Any]) -> tuple[re.Match[str], int] | None:
    """The marker of the first user turn that has one, and how many assistant turns came after it."""
    messages = body.get("messages") or []
    for i, message in enumerate(messages):
        if message.get("role") == "user":
            marker = AGENT_MARKER.search(_text(message.get("content")))
            if marker is not None:
                return marker, sum(1 for m in messages[i + 1 :] if m.get("role") == "assistant")
    return None


def scripted_tool_calls(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tool calls the next agent step gets (see the module doc), or ``None`` for an answer.

    The steps done are the assistant turns after the task: frameworks that flatten tool calls
    into text (smolagents) are counted the same as those that send ``tool_calls``.
    """
    found = _agent_marker(body)
    tools = body.get("tools") or []
    if found is None or not tools:
        return None
    marker, done = found
    steps, parallel = int(marker.group(1)), int(marker.group(2) or 1)
    functions = [t.get("function", {}) for t in tools]
    if done >= steps:
        final = next((f for f in functions if f.get("name") == FINAL_ANSWER_TOOL), None)
        if final is None:
            return None
        answer = json.dumps({"answer": f"done after {steps} steps"})
        return [{"index": 0, "id": f"call_{done + 1}_0", "type": "function",
                 "function": {"name": FINAL_ANSWER_TOOL, "arguments": answer}}]  # fmt: skip
    function = next((f for f in functions if f.get("name") != FINAL_ANSWER_TOOL), functions[0])
    params = function.get("parameters") or {}
    props = params.get("properties") or {}
    step = done + 1
    arguments = json.dumps({k: _argument(props.get(k, {}), step) for k in params.get("required") or []})
    return [
        {"index": i, "id": f"call_{step}_{i}", "type": "function",
         "function": {"name": function.get("name", ""), "arguments": arguments}}
        for i in range(parallel)
    ]  # fmt: skip


def create_app() -> Starlette:
    """The upstream's ASGI app (its counters live in the app, one set per process)."""
    counts = _Counts()

    async def chat(request: Request) -> Response:
        body = await request.json()
        counts.chat += 1
        model = str(body.get("model", "fake"))
        question = _last_user_text(body)
        slow = SLOW_MARKER in question
        found = _agent_marker(body)
        if found is not None:
            answer = f"done after {found[0].group(1)} steps"
            return _agent_reply(body, model, scripted_tool_calls(body), answer)
        text = f"{model} answers: {question[:200]}"
        text += "".join(f" [{line}]" for line in _echoed_system_lines(body))
        pieces = [f"{i} " for i in range(SLOW_PIECES)] if slow else text.split(" ")
        if not slow:
            pieces = [p if i == len(pieces) - 1 else p + " " for i, p in enumerate(pieces)]
        prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        if not body.get("stream"):
            if slow:
                await asyncio.sleep(SLOW_PIECES * SLOW_DELAY_S)
            choice = {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "finish_reason": "stop"}
            return JSONResponse(
                {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                 "choices": [choice], "usage": usage}
            )

        def event(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": choices, **extra}
            return f"data: {json.dumps(chunk)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield event({"role": "assistant", "content": ""}, None)
            for piece in pieces:
                if slow:
                    await asyncio.sleep(SLOW_DELAY_S)
                yield event({"content": piece}, None)
            yield event({}, "stop")
            yield event({}, None, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        counts.embeddings += 1
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        data = [{"object": "embedding", "index": i, "embedding": embed(str(t))} for i, t in enumerate(texts)]
        tokens = sum(len(str(t)) for t in texts) // 4
        return JSONResponse(
            {"object": "list", "data": data, "model": body.get("model", "fake-embed"),
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def stats(_: Request) -> Response:
        return JSONResponse({"chat": counts.chat, "embeddings": counts.embeddings})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )


def _agent_reply(body: dict[str, Any], model: str, calls: list[dict[str, Any]] | None, answer: str) -> Response:
    """A scripted agent step: tool calls, or the final answer (whole or streamed)."""
    prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 8, "total_tokens": prompt_tokens + 8}
    finish = "tool_calls" if calls else "stop"
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else answer}
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return JSONResponse(
            {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
             "choices": [choice], "usage": usage}
        )  # fmt: skip

    def event(delta: dict[str, Any], finish_reason: str | None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta or finish_reason else []
        chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": choices, **extra}  # fmt: skip
        return f"data: {json.dumps(chunk)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield event({"role": "assistant", "content": "" if not calls else None}, None)
        if calls:
            yield event({"tool_calls": calls}, None)
        else:
            yield event({"content": answer}, None)
        yield event({}, finish)
        yield event({}, None, usage=usage)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream on the loopback interface.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keep-alive-s", type=int, default=5, help="how long an idle connection stays open")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
        timeout_keep_alive=args.keep_alive_s,
    )  # fmt: skip


if __name__ == "__main__":
    main()
