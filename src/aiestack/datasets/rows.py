"""The two row shapes a dataset holds, and turning the shapes people bring into them.

- **chat**: ``{"messages": [{"role", "content"}, ...]}`` ending with an assistant message (what SFT
  trains on); roles are ``system``, ``user``, ``assistant`` and ``tool``. A RAG row may also carry
  ``"sources"`` (the passages the answer was grounded in), a tool-use row ``"tools"``.
- **preference**: ``{"prompt": [messages], "chosen": [assistant message], "rejected": [assistant
  message]}`` — TRL's conversational preference format (DPO, ORPO, KTO read it).

:func:`normalise` accepts, besides those two, the common flat shapes: ``prompt``/``completion``,
``instruction``/``input``/``output`` (Alpaca), ``question``/``answer``, ``input``/``output``, and
preference pairs whose ``prompt``, ``chosen`` and ``rejected`` are plain strings, and OpenAI's DPO lines
(``{"input": {"messages"}, "preferred_output", "non_preferred_output"}``, what ``datasets export
--format openai`` writes for a preference dataset). Anything else is a
:class:`RowError` that says which shapes are understood.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiestack.stores.datasets import DatasetKind

ROLES = ("system", "user", "assistant", "tool")
_SHAPES = (
    '{"messages": [...]} (OpenAI chat), {"prompt", "completion"}, {"instruction", "input", "output"}, '
    '{"question", "answer"}, {"input", "output"}, or {"prompt", "chosen", "rejected"} (preference)'
)
_OPENAI_DPO = ("input", "preferred_output", "non_preferred_output")


class RowError(ValueError):
    """A record that is not a valid row; the message says what is wrong and what is understood."""


def kind_of(record: Mapping[str, Any]) -> DatasetKind:
    """``preference`` for a record with ``chosen`` and ``rejected`` (or OpenAI's DPO fields), else ``chat``."""
    if "chosen" in record and "rejected" in record:
        return "preference"
    return "preference" if all(k in record for k in _OPENAI_DPO) else "chat"


def normalise(record: Mapping[str, Any], kind: DatasetKind) -> dict[str, Any]:
    """``record`` in the canonical shape of ``kind`` (a new dict), or :class:`RowError`."""
    if not isinstance(record, Mapping):
        raise RowError(f"a row must be a JSON object, not {type(record).__name__}")
    # Columnar files (CSV, Parquet) give every row every column: an empty cell is an absent field.
    record = {k: v for k, v in record.items() if v is not None and v != ""}
    if kind == "preference":
        return _preference(record)
    return _chat(record)


def _chat(record: Mapping[str, Any]) -> dict[str, Any]:
    if "chosen" in record or "rejected" in record:
        raise RowError("this is a preference pair (chosen/rejected), but the dataset is of kind chat; use --kind preference")
    messages: list[dict[str, Any]]
    if "messages" in record:
        messages = _messages(record["messages"], "messages")
    elif "completion" in record and "prompt" in record:
        messages = [*_turns(record["prompt"], "prompt"), _assistant(record["completion"], "completion")]
    elif "instruction" in record and "output" in record:
        extra = record.get("input")
        user = _text(record["instruction"], "instruction") + (f"\n\n{_text(extra, 'input')}" if extra else "")
        messages = [{"role": "user", "content": user}, _assistant(record["output"], "output")]
    elif "question" in record and "answer" in record:
        messages = [{"role": "user", "content": _text(record["question"], "question")}, _assistant(record["answer"], "answer")]
    elif "input" in record and "output" in record:
        messages = [{"role": "user", "content": _text(record["input"], "input")}, _assistant(record["output"], "output")]
    else:
        raise RowError(f"cannot read a chat example from the fields {sorted(record)}; understood: {_SHAPES}")
    if (system := record.get("system")) and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": _text(system, "system")})
    if messages[-1]["role"] != "assistant":
        raise RowError("a chat example must end with an assistant message (the answer to train on)")
    if not any(m["role"] in ("user", "tool") for m in messages):
        raise RowError("a chat example needs at least one user message before the answer")
    row: dict[str, Any] = {"messages": messages}
    for extra_key in ("sources", "tools"):
        if record.get(extra_key):
            row[extra_key] = _json_value(record[extra_key], extra_key)
    return row


def _preference(record: Mapping[str, Any]) -> dict[str, Any]:
    if all(k in record for k in _OPENAI_DPO) and "prompt" not in record:
        given = _json_value(record["input"], "input")
        if not isinstance(given, Mapping) or "messages" not in given:
            raise RowError('input must be {"messages": [...]} in an OpenAI DPO line')
        record = {"prompt": given["messages"], "chosen": record["preferred_output"], "rejected": record["non_preferred_output"]}
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    if missing:
        raise RowError(f"a preference pair needs prompt, chosen and rejected; missing {', '.join(missing)}")
    prompt = _turns(record["prompt"], "prompt")
    chosen = _answer(record["chosen"], "chosen")
    rejected = _answer(record["rejected"], "rejected")
    if chosen == rejected:
        raise RowError("chosen and rejected are the same answer: the pair teaches nothing")
    row: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if record.get("sources"):
        row["sources"] = _json_value(record["sources"], "sources")
    return row


def _json_value(value: Any, field: str) -> Any:
    if isinstance(value, str):  # CSV and Parquet carry nested values as JSON text
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise RowError(f"{field}: not valid JSON") from None
    return value


def _messages(value: Any, field: str) -> list[dict[str, Any]]:
    value = _json_value(value, field)
    if not isinstance(value, list) or not value:
        raise RowError(f"{field} must be a non-empty list of {{role, content}} messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            raise RowError(f"{field}[{i}] must be an object with a role ({', '.join(ROLES)}) and content")
        content = message.get("content")
        if content is None and message.get("tool_calls"):
            out.append({"role": message["role"], "content": None, "tool_calls": message["tool_calls"]})
            continue
        clean: dict[str, Any] = {"role": message["role"], "content": _text(content, f"{field}[{i}].content")}
        for key in ("name", "tool_call_id", "tool_calls"):
            if message.get(key) is not None:
                clean[key] = message[key]
        out.append(clean)
    return out


def _turns(value: Any, field: str) -> list[dict[str, Any]]:
    """A prompt: plain text (one user message) or a list of messages."""
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [{"role": "user", "content": _text(value, field)}]
    return _messages(value, field)


def _answer(value: Any, field: str) -> list[dict[str, Any]]:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [_assistant(value, field)]
    messages = _messages(value, field)
    if messages[-1]["role"] != "assistant":
        raise RowError(f"{field} must end with an assistant message")
    return messages


def _assistant(value: Any, field: str) -> dict[str, Any]:
    return {"role": "assistant", "content": _text(value, field)}


def _text(value: Any, field: str) -> str:
    if isinstance(value, list):  # OpenAI content parts
        parts = [p.get("text", "") for p in value if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(parts) != len(value):
            raise RowError(f"{field}: only text content parts can go into a dataset")
        value = "".join(parts)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{field} must be non-empty text")
    return value


def prompt_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The messages a row's answer responds to (chat: all but the final answer; preference: prompt)."""
    if "prompt" in data:
        return list(data["prompt"])
    return list(data["messages"][:-1])


def answers(data: Mapping[str, Any]) -> list[str]:
    """The answer texts of a row (chat: the final answer; preference: chosen, then rejected)."""
    if "messages" in data:
        return [str(data["messages"][-1].get("content") or "")]
    return [str(m.get("content") or "") for key in ("chosen", "rejected") for m in data[key][-1:]]
