"""What a finetuning run trains on: a stored dataset version or an exported JSONL file, as prompt texts.

The rows are read through the datasets wing (:func:`aiestack.datasets.resolve` for ``NAME`` or
``NAME@VERSION`` in a :class:`~aiestack.stores.datasets.DatasetStore`; :func:`aiestack.datasets.from_file`
for a file in any of the export formats: OpenAI SFT/DPO JSONL, HF/TRL chat JSONL, preference pairs). The
data's identity is the version's content hash (for a file, the same hash over its rows, so a file and the
stored version it was exported from have the same id).

Each row becomes *text*, rendered the way the model will be served (:mod:`aiestack.models.llama_prompt`):
the prompt is the conversation before the answer, rendered in ``chat_format`` exactly as the llama_cpp
provider renders a request, and the completion is the answer (after a space for the ``transcript``
format, whose prompt ends with ``Assistant:``) followed by the end-of-sequence token, so the finetuned
model learns to stop. Training and serving therefore see the same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiestack.errors import ConfigError
from aiestack.models.llama_prompt import ChatFormat, RenderedPrompt, render_prompt
from aiestack.stores.datasets import DatasetKind, DatasetRow, DatasetStore, content_hash
from aiestack.types import Message

TemplateFn = Callable[[list[dict[str, Any]]], str]
Purpose = Literal["sft", "dpo"]


@dataclass(frozen=True, slots=True)
class TrainingData:
    """The rows of one dataset version (or file) and where they came from (for the run record)."""

    kind: DatasetKind
    rows: tuple[Mapping[str, Any], ...]
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``NAME@VERSION`` for a stored version, else the file's name; see ``source`` for the hash."""
        return str(self.source.get("dataset") or self.source.get("file") or "rows")


def load_training_data(ref: str | Path, *, store: DatasetStore | None = None) -> TrainingData:
    """The rows ``ref`` names: an existing file, or ``NAME``/``NAME@VERSION`` in ``store``."""
    path = Path(ref).expanduser()
    if path.is_file():
        from aiestack.datasets import from_file

        built = from_file(path)
        rows = tuple(r.data for r in built.rows)
        digest = content_hash(built.kind, [DatasetRow(r).id for r in rows])
        return TrainingData(built.kind, rows, {"file": str(path), "content_hash": digest, "rows": len(rows)})
    if store is None:
        raise ConfigError(str(ref), "is neither a file nor a dataset name (no dataset store was given)",
                          "pass a JSONL file exported by `aiestack datasets export`, or a dataset NAME[@VERSION]")
    from aiestack.datasets import iter_rows, resolve

    try:
        version = resolve(store, str(ref))
    except KeyError as exc:
        raise ConfigError(str(ref), str(exc.args[0]), "`aiestack datasets list` shows the datasets") from None
    rows = tuple(r.data for r in iter_rows(store, version))
    return TrainingData(version.kind, rows, {"dataset": f"{version.name}@{version.version}",
                                             "content_hash": version.content_hash, "rows": len(rows)})


def to_messages(dicts: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Stored message dicts as :class:`Message` values (text only; a tool-call turn becomes its JSON)."""
    out = []
    for m in dicts:
        content = m.get("content")
        if content is None and m.get("tool_calls"):
            content = json.dumps(m["tool_calls"], ensure_ascii=False)
        out.append(Message(role=m["role"], content=str(content or "")))
    return out


@dataclass(frozen=True, slots=True)
class Renderer:
    """Renders a conversation as the served model will see it, and an answer as the text to learn."""

    chat_format: ChatFormat = "auto"
    instruct: bool = False
    eos: str = ""
    template: TemplateFn | None = None  # the tokenizer's chat template, for chat_format "template"

    def prompt(self, messages: Sequence[Mapping[str, Any]]) -> RenderedPrompt:
        msgs = to_messages(messages)
        concrete = self._concrete(msgs)
        if concrete == "template":
            if self.template is None:
                raise ConfigError("chat_format", "the base model's tokenizer has no chat template",
                                  "use chat_format 'transcript' or 'raw' for a base model")
            return RenderedPrompt(text=self.template([dict(m) for m in messages]), format="template")
        return render_prompt(msgs, concrete, instruct=self.instruct)

    def completion(self, prompt: RenderedPrompt, answer: str) -> str:
        lead = " " if prompt.strip_leading_space else ""
        return f"{lead}{answer}{self.eos}"

    def _concrete(self, msgs: Sequence[Message]) -> ChatFormat:
        from aiestack.models.llama_prompt import resolve_format

        return resolve_format(msgs, self.chat_format, instruct=self.instruct, has_template=self.template is not None)


def chat_template(tokenizer: Any) -> TemplateFn:
    """The tokenizer's chat template as a prompt renderer (generation prompt added). A template that writes
    the BOS token itself loses it here when the tokenizer adds one anyway: a doubled BOS is not what the
    llama_cpp provider sends (:func:`aiestack.models.llama_prompt.render_template` avoids it too)."""
    bos = str(tokenizer.bos_token or "")
    adds_bos = bool(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]

    def render(messages: list[dict[str, Any]]) -> str:
        text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return text[len(bos):] if adds_bos and text.startswith(bos) else text

    return render


def sft_texts(data: TrainingData, renderer: Renderer) -> list[dict[str, str]]:
    """``{"prompt", "completion"}`` texts for SFT (a preference row trains on its chosen answer)."""
    out = []
    for row in data.rows:
        if data.kind == "preference":
            prompt_msgs, answer = list(row["prompt"]), _answer(row["chosen"])
        else:
            prompt_msgs, answer = list(row["messages"][:-1]), _answer(row["messages"][-1:])
        prompt = renderer.prompt(prompt_msgs)
        out.append({"prompt": prompt.text, "completion": renderer.completion(prompt, answer)})
    return out


def dpo_texts(data: TrainingData, renderer: Renderer) -> list[dict[str, str]]:
    """``{"prompt", "chosen", "rejected"}`` texts for DPO (a chat dataset has no pairs: an error)."""
    if data.kind != "preference":
        raise ConfigError(data.id, "DPO needs preference pairs (prompt, chosen, rejected); this is a chat dataset",
                          "build a preference dataset (`aiestack datasets build --kind preference`), or run `finetune sft`")
    out = []
    for row in data.rows:
        prompt = renderer.prompt(list(row["prompt"]))
        out.append({"prompt": prompt.text, "chosen": renderer.completion(prompt, _answer(row["chosen"])),
                    "rejected": renderer.completion(prompt, _answer(row["rejected"]))})
    return out


def _answer(messages: Sequence[Mapping[str, Any]]) -> str:
    return to_messages(messages[-1:])[0].text
