"""Synthetic data (AI Engineering, ch. 8): questions from a collection's chunks, instruction variants
from seed rows, and an AI judge that filters them. Every row records how it was made.

- :func:`synthesize_questions`: for each chunk, a model writes a question the chunk answers and the
  answer (JSON, schema-constrained so that grammar-constrained local models always parse); a second
  call checks the question is answerable from the chunk alone and the question is kept only if so.
  Each row carries the chunk in ``sources`` (a RAG row), so it is also a synthetic qrel (question →
  chunk and document) for retrieval evals and embedding training (``datasets export --format qrels``).
- :func:`synthesize_variants`: self-instruct / Evol-Instruct: from each seed row's instruction, a new
  instruction that deepens, constrains, concretises or broadens it, then the model's answer to it.
- :func:`judge_rows`: an AI judge scores each row 1-5; rows under ``min_score`` are removed, with the
  score as the reason (a curation step's report).

Lineage of every synthetic row: ``generator`` (the model or route), ``prompt`` and ``prompt_version``
(the first 12 hex digits of the template's sha256: a changed template is a new version), the method,
and what it came from (``chunk_id``/``document_id``/``collection``, or ``seed`` row id). Model calls
go through the side-call seam (``stack.side_calls.caller("datasets.synthesis")``): routes, budgets
and traces apply, and they are never answered by the gateway's caches.

The model calls stay in this process (they need the stack's keys, limits, budgets and traces), run
``concurrency`` at a time; a batch runner would only add a hop. What makes a long run safe is
``checkpoints=`` (a directory): every finished item (a chunk, a seed and method, a judged row) is
recorded as it finishes (:class:`~aiestack.batch.Checkpoint`, keyed by the model, prompt version,
options and items), so the same call after an interruption (an error, a spent budget, Ctrl-C) does
only the items left and gives the same rows. ``progress(done, total)`` is called as items finish.
"""


from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiestack.batch import Checkpoint
from aiestack.datasets.curate import Removal, StepReport
from aiestack.datasets.rows import RowError, answers, normalise, prompt_messages
from aiestack.datasets.sources import Built
from aiestack.sidecalls import ModelCaller
from aiestack.stores.datasets import DatasetRow
from aiestack.types import ChatRequest, Chunk, Message, Params, ResponseFormat

_T = TypeVar("_T")
_I = TypeVar("_I")
#: ``progress(done, total)``: items finished so far (resumed ones included) of the step's total.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SynthesisPrompt:
    """A built-in template; its version is its content hash, recorded on every row it made."""

    name: str
    template: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:12]


QUESTION = SynthesisPrompt(
    "aiestack.synth.question",
    "Write one question that the passage below answers, and its answer, using only the passage. The question "
    "must make sense on its own: do not refer to \"the passage\", \"the text\" or \"this study\".\n"
    'Reply with JSON: {{"question": "...", "answer": "..."}}\n\nPassage:\n{passage}',
)
ANSWERABLE = SynthesisPrompt(
    "aiestack.synth.answerable",
    "Passage:\n{passage}\n\nQuestion: {question}\n\n"
    "Can the question be answered from the passage alone? Reply with one word: yes or no.",
)
VARIANT = SynthesisPrompt(
    "aiestack.synth.variant",
    "Here is an instruction:\n{instruction}\n\nWrite one new instruction of the same kind and domain that {method}. "
    "It must be answerable and self-contained. Reply with the new instruction only.",
)
JUDGE = SynthesisPrompt(
    "aiestack.synth.judge",
    "Rate the answer to the instruction from 1 (useless or wrong) to 5 (correct, complete and helpful).\n\n"
    "Instruction:\n{instruction}\n\nAnswer:\n{answer}\n\nReply with the number only.",
)
#: Evol-Instruct's in-depth and in-breadth moves.
METHODS = {
    "deepen": "is harder: answering it takes one more step of reasoning",
    "constrain": "adds one concrete constraint or requirement",
    "concretise": "replaces a general concept with a more specific one",
    "breadth": "is about another topic of the same domain, equally hard",
}
_QA_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
_YES = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_SCORE = re.compile(r"\b([1-5])\b")


def _request(model: str, prompt: SynthesisPrompt, max_tokens: int, json_schema: dict[str, Any] | None = None, **values: str) -> ChatRequest:
    fmt = ResponseFormat(type="json_schema", schema=json_schema, name="qa", strict=True) if json_schema else None
    params = Params(temperature=0.0, max_tokens=max_tokens, response_format=fmt)
    return ChatRequest(model=model, messages=(Message(role="user", content=prompt.template.format(**values)),),
                       params=params, metadata={"cache": "off"})


async def _bounded(items: Sequence[_I], work: Callable[[_I], Awaitable[_T]], concurrency: int) -> list[_T]:
    """``work`` on every item, at most ``concurrency`` at a time; results in the items' order. The first
    error cancels the items still waiting or running (their work is not recorded) and is raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: _I) -> _T:
        async with gate:
            return await work(item)

    tasks = [asyncio.ensure_future(one(i)) for i in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass(frozen=True, slots=True)
class _Resumable:
    """How a step records its items: the checkpoint directory, the step's inputs, and progress."""

    checkpoints: Path | None
    progress: Progress | None


async def _resumable(
    step: str, inputs: dict[str, Any], items: Sequence[_I], keys: Sequence[str], work: Callable[[_I], Awaitable[_T]],
    concurrency: int, how: _Resumable, encode: Callable[[_T], Any], decode: Callable[[Any], _T],
) -> list[_T]:
    """:func:`_bounded`, skipping the items a checkpoint of the same step and inputs has finished,
    recording each new one as it finishes, and reporting progress; the checkpoint is removed at the end."""
    checkpoint = Checkpoint.open(how.checkpoints, step, {**inputs, "items": list(keys)}) if how.checkpoints else None
    total, done = len(items), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if how.progress is not None:
            how.progress(done, total)

    async def one(job: tuple[str, _I]) -> _T:
        key, item = job
        if checkpoint is not None and key in checkpoint:
            result = decode(checkpoint.get(key))
        else:
            result = await work(item)
            if checkpoint is not None:
                checkpoint.record(key, encode(result))
        tick()
        return result

    results = await _bounded(list(zip(keys, items, strict=True)), one, concurrency)
    if checkpoint is not None:
        checkpoint.finish()
    return results


def _encode_row(result: tuple[DatasetRow | None, str | None]) -> Any:
    row, why = result
    return {"row": None if row is None else {"data": row.data, "lineage": row.lineage}, "why": why}


def _decode_row(saved: Any) -> tuple[DatasetRow | None, str | None]:
    row = saved["row"]
    return (None if row is None else DatasetRow(row["data"], row["lineage"])), saved["why"]


def _lineage(model: str, prompt: SynthesisPrompt, **more: Any) -> dict[str, Any]:
    return {"generator": model, "prompt": prompt.name, "prompt_version": prompt.version, **more}


async def synthesize_questions(
    chunks: Sequence[Chunk], call: ModelCaller, *, model: str, check: bool = True, collection: str | None = None,
    concurrency: int = 4, max_tokens: int = 256, checkpoints: Path | None = None, progress: Progress | None = None,
) -> Built:
    """One question and answer per chunk (in chunk order), kept when answerable from the chunk.
    ``checkpoints``: resume an interrupted run (see the module's docstring)."""
    built = Built("chat", [], {"from": "synthesis", "method": "questions", "generator": model,
                               "prompt": f"{QUESTION.name}@{QUESTION.version}", "collection": collection, "checked": check})

    async def one(chunk: Chunk) -> tuple[DatasetRow | None, str | None]:
        reply = await call(_request(model, QUESTION, max_tokens, _QA_SCHEMA, passage=chunk.text))
        try:
            qa = json.loads(reply.text)
            question, answer = str(qa["question"]).strip(), str(qa["answer"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError):
            return None, "unparseable reply"
        if not question or not answer:
            return None, "empty question or answer"
        if check:
            verdict = await call(_request(model, ANSWERABLE, 4, passage=chunk.text, question=question))
            said = _YES.match(verdict.text)
            if said is None or said.group(1).lower() != "yes":
                return None, "not answerable from its chunk"
        source = {"chunk_id": chunk.id, "document_id": chunk.document_id, "text": chunk.text}
        data = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], "sources": [source]}
        extra = {"collection": collection} if collection else {}
        return DatasetRow(normalise(data, "chat"), _lineage(model, QUESTION, method="questions", chunk_id=chunk.id,
                                                             document_id=chunk.document_id, **extra)), None

    inputs = {"model": model, "prompts": [QUESTION.version, ANSWERABLE.version], "check": check,
              "collection": collection, "max_tokens": max_tokens, "texts": [_digest(c.text) for c in chunks]}
    results = await _resumable("synth-questions", inputs, chunks, [c.id for c in chunks], one, concurrency,
                               _Resumable(checkpoints, progress), _encode_row, _decode_row)
    for row, why in results:
        if row is not None:
            built.rows.append(row)
        else:
            built.skip(str(why))
    return built


async def synthesize_variants(
    seeds: Sequence[DatasetRow], call: ModelCaller, *, model: str, methods: Sequence[str] = ("deepen", "constrain"),
    concurrency: int = 4, max_tokens: int = 512, checkpoints: Path | None = None, progress: Progress | None = None,
) -> Built:
    """For each seed row and method, a new instruction and the model's answer to it.
    ``checkpoints``: resume an interrupted run (see the module's docstring)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown variant method(s) {', '.join(unknown)}; use {', '.join(METHODS)}")
    built = Built("chat", [], {"from": "synthesis", "method": "variants", "generator": model, "methods": list(methods),
                               "prompt": f"{VARIANT.name}@{VARIANT.version}"})

    async def one(job: tuple[DatasetRow, str]) -> tuple[DatasetRow | None, str | None]:
        seed, method = job
        instruction = _instruction(seed)
        if not instruction:
            return None, "seed has no user instruction"
        reply = await call(_request(model, VARIANT, max_tokens // 2, instruction=instruction, method=METHODS[method]))
        variant = reply.text.strip()
        if not variant or variant == instruction:
            return None, "no new instruction"
        answer = await call(ChatRequest(model=model, messages=(Message(role="user", content=variant),),
                                        params=Params(temperature=0.0, max_tokens=max_tokens), metadata={"cache": "off"}))
        try:
            data = normalise({"messages": [{"role": "user", "content": variant}, {"role": "assistant", "content": answer.text}]}, "chat")
        except RowError:
            return None, "empty answer"
        return DatasetRow(data, _lineage(model, VARIANT, method=f"evol:{method}", seed=seed.id)), None

    jobs = [(s, m) for s in seeds for m in methods]
    inputs = {"model": model, "prompt": VARIANT.version, "max_tokens": max_tokens}
    results = await _resumable("synth-variants", inputs, jobs, [f"{s.id}:{m}" for s, m in jobs], one, concurrency,
                               _Resumable(checkpoints, progress), _encode_row, _decode_row)
    for row, why in results:
        if row is not None:
            built.rows.append(row)
        else:
            built.skip(str(why))
    return built


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _instruction(row: DatasetRow) -> str:
    return "\n".join(str(m.get("content") or "") for m in prompt_messages(row.data) if m.get("role") == "user").strip()


async def judge_rows(
    rows: Sequence[DatasetRow], call: ModelCaller, *, model: str, min_score: int = 4, concurrency: int = 4,
    checkpoints: Path | None = None, progress: Progress | None = None,
) -> tuple[list[DatasetRow], StepReport]:
    """Rows the judge scores at least ``min_score`` (1-5), their scores in the lineage; the rest removed
    with the score (or "no score") as the reason. ``checkpoints``: resume an interrupted run."""
    report = StepReport("judge", len(rows), detail={"judge": model, "min_score": min_score, "prompt": f"{JUDGE.name}@{JUDGE.version}"})

    async def score(row: DatasetRow) -> int | None:
        reply = await call(_request(model, JUDGE, 4, instruction=_instruction(row), answer=answers(row.data)[0]))
        found = _SCORE.search(reply.text)
        return int(found.group(1)) if found else None

    scores = await _resumable("synth-judge", {"model": model, "prompt": JUDGE.version}, rows, [r.id for r in rows], score,
                              concurrency, _Resumable(checkpoints, progress), lambda v: v, lambda v: v)
    kept = []
    for row, value in zip(rows, scores, strict=True):
        if value is not None and value >= min_score:
            kept.append(DatasetRow(row.data, {**row.lineage, "judge": model, "judge_score": value}))
        else:
            report.removed.append(Removal(row.id, "judge", f"judge score {value}" if value is not None else "no score"))
    return kept, report
