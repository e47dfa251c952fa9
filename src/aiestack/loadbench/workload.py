"""What a load benchmark sends: prompt and output lengths from a distribution, a dataset, or stored traffic.

A :class:`Workload` is a finite list of :class:`RequestSpec` (messages, the output length asked for)
that a run cycles through, plus, for replayed traffic, the recorded gaps between arrivals.

- **Distributions** (``--input-len``, ``--output-len``): ``N`` (fixed), ``uniform:LO,HI``,
  ``normal:MEAN,SD`` or ``exponential:MEAN``, in tokens; drawn with a seeded generator, clipped to
  at least 1. A synthetic prompt of N tokens is N words drawn from a list of common one-token English
  words, different for every request (so that no prefix is shared unless ``--prefix-len`` asks for one).
- **Datasets** (``--dataset FILE``): JSON Lines with ``prompt`` or ``messages`` and, optionally,
  ``max_tokens`` / ``output_len``; or a ShareGPT JSON file (``conversations``: the first human turn is
  the prompt, the reply's length sets the output length), the format vLLM's benchmark reads.
- **Replay** (``--replay``): stored exchanges: their messages when content tracing kept them, else a
  synthetic prompt of the recorded input length; the recorded output length; and the gaps between
  their arrival times, for an open-loop run that sends traffic in the shape it arrived.

Text lengths without a tokenizer are estimated as characters / 4 (the gateway's own estimate).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiestack.errors import InvalidRequest
from aiestack.stores.base import ExchangeRecord

#: Common English words that are one token for the GPT, Llama and Gemma tokenizers.
_WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his", "her", "they", "this", "had", "not", "are", "but", "be", "have", "one", "all", "were", "when", "there", "can", "an", "which", "their", "said", "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so", "these", "would", "other", "into", "has", "more", "two", "like", "him", "time", "see", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "over", "new", "sound", "take", "only", "little", "work", "know", "place", "year", "live", "me", "back", "give", "most", "very", "after", "thing", "our", "just", "name", "good", "sentence", "man", "think", "say", "great", "where", "help", "through", "much", "before", "line", "right", "too", "mean", "old", "any", "same", "tell", "boy", "follow", "came", "want", "show", "also", "around", "form", "three", "small", "set", "put", "end", "does", "another", "well", "large", "must", "big", "even", "such", "because", "turn", "here", "why", "ask", "went", "men", "read", "need", "land", "different", "home", "us", "move", "try", "kind", "hand", "picture", "again", "change", "off", "play", "spell", "air", "away", "animal", "house", "point", "page"]
_SPEC = re.compile(r"^\s*(?:(fixed|uniform|normal|exponential)\s*:)?\s*([0-9.,\s]+)$")


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A distribution of lengths in tokens."""

    kind: str
    args: tuple[float, ...]

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.kind == "fixed":
            values = np.full(n, self.args[0])
        elif self.kind == "uniform":
            values = rng.integers(int(self.args[0]), int(self.args[1]) + 1, n)
        elif self.kind == "normal":
            values = rng.normal(self.args[0], self.args[1], n)
        else:
            values = rng.exponential(self.args[0], n)
        return [max(1, round(float(v))) for v in values]

    def describe(self) -> str:
        return f"{self.kind}:{','.join(f'{a:g}' for a in self.args)}"


_ARITY = {"fixed": 1, "uniform": 2, "normal": 2, "exponential": 1}


def parse_length(text: str, *, option: str) -> LengthDist:
    """``"128"``, ``"uniform:64,512"``, ``"normal:256,64"``, ``"exponential:200"`` → :class:`LengthDist`."""
    match = _SPEC.match(text)
    hint = f"Write {option} as N, uniform:LO,HI, normal:MEAN,SD or exponential:MEAN (tokens), e.g. {option} uniform:64,512."
    if match is None:
        raise InvalidRequest(f"Cannot read {option} {text!r}.", hint=hint)
    kind = match.group(1) or "fixed"
    try:
        args = tuple(float(a) for a in match.group(2).split(","))
    except ValueError:
        raise InvalidRequest(f"Cannot read {option} {text!r}.", hint=hint) from None
    if len(args) != _ARITY[kind] or any(a < 0 for a in args) or args[0] <= 0:
        raise InvalidRequest(f"{option} {text!r} needs {_ARITY[kind]} positive number(s).", hint=hint)
    if kind == "uniform" and args[1] < args[0]:
        raise InvalidRequest(f"{option} {text!r}: the upper bound is below the lower one.", hint=hint)
    return LengthDist(kind, args)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send: its messages and the number of output tokens to ask for."""

    messages: tuple[dict[str, Any], ...]
    max_tokens: int
    input_tokens: int  # estimated


@dataclass(frozen=True, slots=True)
class Workload:
    specs: tuple[RequestSpec, ...]
    source: str
    #: Recorded gaps between arrivals (seconds), for a replay in the shape traffic arrived; else empty.
    gaps_s: tuple[float, ...] = field(default=())

    def spec(self, i: int) -> RequestSpec:
        return self.specs[i % len(self.specs)]


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), n))


def synthetic(
    inputs: LengthDist, outputs: LengthDist, *, count: int, seed: int = 0, prefix_len: int = 0
) -> Workload:
    """``count`` requests of synthetic prompts; every one starts with the same ``prefix_len`` words."""
    rng = np.random.default_rng(seed)
    prefix = _words(rng, prefix_len) + " " if prefix_len else ""
    specs = tuple(
        RequestSpec(({"role": "user", "content": prefix + _words(rng, n_in)},), n_out, prefix_len + n_in)
        for n_in, n_out in zip(inputs.sample(rng, count), outputs.sample(rng, count), strict=True)
    )
    name = f"synthetic input {inputs.describe()}, output {outputs.describe()}"
    return Workload(specs, name + (f", shared prefix {prefix_len}" if prefix_len else ""))


def from_dataset(path: Path, *, default_output: LengthDist, count: int | None = None, seed: int = 0) -> Workload:
    """Requests from a JSON Lines file (``prompt``/``messages``) or a ShareGPT JSON file."""
    if not path.is_file():
        raise InvalidRequest(f"No dataset file at {path}.", hint="Pass --dataset a .jsonl or ShareGPT .json file.")
    text = path.read_text(encoding="utf-8")
    rows: list[Any]
    try:
        loaded = json.loads(text) if path.suffix == ".json" else None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}.", hint="Fix the file or pass a .jsonl file.") from None
    if isinstance(loaded, list):
        rows = loaded
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InvalidRequest(
                    f"{path}:{number} is not a JSON object.", hint="Each line holds one JSON object."
                ) from None
    rng = np.random.default_rng(seed)
    specs = [spec for row in rows if (spec := _row_spec(row, default_output, rng)) is not None]
    if not specs:
        raise InvalidRequest(
            f"{path} holds no usable request.",
            hint='Each row needs "prompt" (text) or "messages" (OpenAI chat messages), or ShareGPT '
            '"conversations" with a human turn.',
        )
    if count is not None:
        specs = specs[:count]
    return Workload(tuple(specs), f"dataset {path.name} ({len(specs)} requests)")


def _row_spec(row: Any, default_output: LengthDist, rng: np.random.Generator) -> RequestSpec | None:
    if not isinstance(row, dict):
        return None
    output: int | None = row.get("max_tokens") or row.get("output_len")
    if "conversations" in row:  # ShareGPT
        turns = row["conversations"] or []
        human = next((t for t in turns if t.get("from") in ("human", "user")), None)
        reply = next((t for t in turns if t.get("from") in ("gpt", "assistant", "chatgpt")), None)
        if human is None or not human.get("value"):
            return None
        messages: tuple[dict[str, Any], ...] = ({"role": "user", "content": str(human["value"])},)
        if reply is not None and reply.get("value"):
            output = estimate_tokens(str(reply["value"]))
    elif isinstance(row.get("messages"), list) and row["messages"]:
        messages = tuple(dict(m) for m in row["messages"])
    elif isinstance(row.get("prompt"), str) and row["prompt"]:
        messages = ({"role": "user", "content": row["prompt"]},)
    else:
        return None
    if not output:
        output = default_output.sample(rng, 1)[0]
    text = " ".join(str(m.get("content") or "") for m in messages)
    return RequestSpec(messages, int(output), estimate_tokens(text))


def from_exchanges(records: Sequence[ExchangeRecord], *, seed: int = 0) -> Workload:
    """Replay stored exchanges (oldest first): messages when stored, else synthetic text of the recorded length."""
    usable = sorted(
        (r for r in records if r.outcome in ("ok", "cached") and r.output_tokens > 0), key=lambda r: r.created_at
    )
    if not usable:
        raise InvalidRequest(
            "The store holds no completed exchange to replay.",
            hint="Send some traffic through the gateway first, or use --dataset / --input-len instead.",
        )
    rng = np.random.default_rng(seed)
    specs: list[RequestSpec] = []
    for record in usable:
        stored = record.request.get("messages")
        if isinstance(stored, list) and stored:
            messages: tuple[dict[str, Any], ...] = tuple(dict(m) for m in _plain_messages(stored))
        else:
            messages = ({"role": "user", "content": _words(rng, max(1, record.input_tokens))},)
        specs.append(RequestSpec(messages, record.output_tokens, record.input_tokens))
    gaps = tuple(max(0.0, b.created_at - a.created_at) for a, b in itertools.pairwise(usable))
    return Workload(tuple(specs), f"replay of {len(specs)} stored exchanges", (0.0, *gaps))


def _plain_messages(stored: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for message in stored:
        if isinstance(message, dict) and message.get("role"):
            yield {k: v for k, v in message.items() if k in ("role", "content", "name", "tool_call_id", "tool_calls")}
