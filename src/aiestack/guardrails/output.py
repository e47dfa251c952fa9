"""The output guard stage: checks on the model's answer, inside the cache.

Sits between the Cache and the Route stages, so the cache only ever stores answers that passed:
a blocked answer comes back with ``outcome="blocked"`` and no completion, and a blocked stream ends
with an error event (never a clean finish). Checks:

- ``canary``: a fresh canary token is put into the system prompt on the way in (requests without a
  system prompt have nothing to leak and get none, unless ``always``); the answer must not contain it
  (a system-prompt leak). The canary never leaves this stage.
- ``pii_leak``: PII in the answer (the input was redacted, so the model had none of the user's).
- ``topics``: banned terms and topics.
- ``json_schema``: when the request asks for JSON (``response_format``), the answer must parse and
  validate; ``retry`` re-asks the model with the validation error, up to ``retries`` times.
- ``grounding``: when the exchange retrieved context (``Exchange.hits``), the share of the answer
  supported by it; flagged or blocked below the threshold.

Per chunk or buffered: in a stream, canary, PII and topic checks run on a sliding window (text that
could still turn into a match is held back); schema validation buffers the whole answer (and may
re-ask); groundedness runs on the whole answer before the finish is passed on. Verdicts of a full
answer go into ``Exchange.verdicts``; those of a stream, known only at its end, go to the metrics.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Sequence

from aiestack.errors import GuardrailBlocked
from aiestack.guardrails.base import verdict, without_overlaps
from aiestack.guardrails.canary import find_canary, new_canary, with_canary
from aiestack.guardrails.grounding import groundedness
from aiestack.guardrails.input import blocked, kinds
from aiestack.guardrails.pii import mask
from aiestack.guardrails.schema import reask_message, validate
from aiestack.guardrails.stream import rewrite, sentence_start, unsettled
from aiestack.guardrails.table import Guards, GuardTable
from aiestack.monitoring import Metrics
from aiestack.offload import run_cpu
from aiestack.pipeline import Next
from aiestack.streams import collect
from aiestack.types import Completion, Delta, Exchange, Finding, Message, Verdict

OUTPUT_GUARD_STAGE = "output_guard"
#: The most characters of a stream held back so that a value split across chunks is still seen whole
#: (only what may still change is held: see :func:`aiestack.guardrails.stream.unsettled`).
HOLDBACK = 64


class _Failure(Exception):
    def __init__(self, guard: str, action: str, findings: Sequence[Finding]) -> None:
        self.guard, self.action, self.findings = guard, action, list(findings)


class OutputGuard:
    """Output checks per the exchange's policy; see the module doc."""

    name = OUTPUT_GUARD_STAGE

    def __init__(self, table: GuardTable, *, metrics: Metrics | None = None) -> None:
        self._table = table
        self._metrics = metrics

    def passes(self, ex: Exchange) -> bool:
        """Guards off for this exchange's route (the pipeline then skips this stage)."""
        return not self._table.for_exchange(ex).policy.enabled

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        guards = self._table.for_exchange(ex)
        if not guards.policy.enabled:
            return await call_next(ex)
        has_system = any(m.role == "system" for m in ex.request.messages)
        canary = new_canary() if guards.active("canary") and (has_system or guards.policy.canary.always) else None
        inner = dataclasses.replace(ex, request=with_canary(ex.request, canary)) if canary else ex
        result = await call_next(inner)
        if result.request is not ex.request:
            result = dataclasses.replace(result, request=ex.request)  # the canary never leaves this stage
        if result.completion is None:
            return result
        if result.completion.stream is not None:
            return dataclasses.replace(result, completion=self._guard_stream(guards, inner, result, call_next, canary))
        return await self._guard_whole(guards, inner, result, call_next, canary)

    # ------------------------------------------------------------------ a whole answer

    async def _guard_whole(
        self, guards: Guards, inner: Exchange, result: Exchange, call_next: Next, canary: str | None
    ) -> Exchange:
        retries = guards.policy.json_schema.retries
        completion = result.completion
        assert completion is not None
        usage, cost = completion.usage, completion.cost_usd
        retried: dict[str, int] = {}
        while True:
            text, verdicts, failure = await run_cpu(len(completion.text), self._check_text, guards, completion.text, result, canary)
            if failure is None:
                break
            cut_off = _cut_off_json(failure, completion)
            if failure.action == "retry" and retried.get(failure.guard, 0) < retries and not cut_off:
                retried[failure.guard] = retried.get(failure.guard, 0) + 1
                again = await call_next(_reask(inner, completion.text, failure))
                if again.completion is None:
                    return dataclasses.replace(again, request=result.request)
                completion = await collect(again.completion)
                usage = usage + completion.usage
                cost = (cost or 0.0) + completion.cost_usd if completion.cost_usd is not None else cost
                result = dataclasses.replace(again, request=result.request)
                continue
            if _only_schema_failed(verdicts) and guards.policy.json_schema.exhausted == "flag":
                verdicts = [dataclasses.replace(v, action="flag") if v.guard == "json_schema" else v for v in verdicts]
                break
            self._count(verdicts)
            reason = f"the answer failed the {failure.guard} check ({kinds(failure.findings)})"
            if cut_off:
                reason += " because it was cut off at max_tokens (a re-ask would be cut off too: raise max_tokens)"
            elif failure.action == "retry":
                reason += f" after {retried.get(failure.guard, 0)} re-asks"
            return blocked(result, verdicts, failure.guard, reason, usage=usage, cost_usd=cost)
        verdicts = [_mark_retried(v, retried.get(v.guard, 0)) for v in verdicts]
        self._count(verdicts)
        if text != completion.text:
            completion = dataclasses.replace(completion, message=dataclasses.replace(completion.message, content=text))
        if usage is not completion.usage or cost is not completion.cost_usd:  # re-asked: the sums of every call
            completion = dataclasses.replace(completion, usage=usage, cost_usd=cost)
        return dataclasses.replace(result, completion=completion, verdicts=(*result.verdicts, *verdicts))

    def _check_text(
        self, guards: Guards, text: str, result: Exchange, canary: str | None
    ) -> tuple[str, list[Verdict], _Failure | None]:
        """Run every output check on ``text``: (text after redaction, verdicts, the first failure)."""
        verdicts: list[Verdict] = []
        policy = guards.policy
        checks: list[tuple[str, str, float, list[Finding], float | None]] = []
        score: float | None  # name, action, started, findings, score
        if canary is not None:
            t = time.perf_counter()
            checks.append(("canary", policy.canary.action, t, find_canary(text, canary), None))
        if guards.active("pii_leak"):
            t = time.perf_counter()
            checks.append(("pii_leak", policy.pii_leak.action, t, guards.pii.detect(text), None))
        if guards.active("topics") and policy.topics.scope != "input" and not guards.topics.empty:
            t = time.perf_counter()
            checks.append(("topics", policy.topics.action, t, guards.topics.detect(text), None))
        if guards.toxicity is not None and policy.toxicity.scope != "input":
            t = time.perf_counter()
            checks.append(("toxicity", policy.toxicity.action, t, guards.toxicity.detect(text), None))
        fmt = result.request.params.response_format
        if guards.active("json_schema") and fmt is not None and fmt.type != "text":
            t = time.perf_counter()
            checks.append(("json_schema", policy.json_schema.action, t, validate(text, fmt), None))
        if guards.active("grounding") and result.hits:
            t = time.perf_counter()
            grounded, unsupported = groundedness(text, [h.chunk.text for h in result.hits], support=policy.grounding.support)
            failing = unsupported if grounded < policy.grounding.threshold else []
            checks.append(("grounding", policy.grounding.action, t, failing, round(grounded, 4)))
        failure: _Failure | None = None
        for name, action, started, findings, score in checks:
            if not findings:
                verdicts.append(verdict(name, "allow", started=started, score=score))
                continue
            if action == "redact" and name in ("pii_leak", "topics", "toxicity"):
                text = mask(text, without_overlaps(findings)) if name == "pii_leak" else _mask_terms(text, findings)
                verdicts.append(verdict(name, "redact", findings, started=started, score=score))
            elif action == "flag":
                verdicts.append(verdict(name, "flag", findings, started=started, score=score))
            else:
                verdicts.append(verdict(name, "block", findings, started=started, score=score))
                failure = failure or _Failure(name, action, findings)
        return text, verdicts, failure

    def _count(self, verdicts: Sequence[Verdict]) -> None:
        if self._metrics is not None:
            for v in verdicts:
                if v.action != "allow":
                    self._metrics.guard_action(v.guard, v.action, direction="output")

    # ------------------------------------------------------------------ a stream

    def _guard_stream(
        self, guards: Guards, inner: Exchange, result: Exchange, call_next: Next, canary: str | None
    ) -> Completion:
        completion = result.completion
        assert completion is not None and completion.stream is not None
        fmt = result.request.params.response_format
        if guards.active("json_schema") and fmt is not None and fmt.type != "text":
            return self._buffered(guards, inner, result, call_next, canary)
        policy = guards.policy
        watch = tuple(t for t in (canary, *policy.topics.terms) if t)
        limit = max([HOLDBACK, *(len(t) + 1 for t in watch)])
        seen: list[Verdict] = []
        plain = _window_exchange(result)
        toxicity = guards.toxicity is not None and policy.toxicity.scope != "input"

        def scan(pending: str, final: bool) -> tuple[str, int]:
            text, verdicts, failure = self._check_text(guards, pending, plain, canary)
            if failure is not None:
                self._count(verdicts)
                raise GuardrailBlocked(failure.guard, f"the answer failed the {failure.guard} check ({kinds(failure.findings)})")
            cut = len(pending) if final else len(pending) - unsettled(pending, limit=limit, watch=watch)
            if toxicity and not final:  # a sentence is judged whole: hold back the one being written
                cut = min(cut, sentence_start(pending, cut))
            for v in verdicts:
                for f in v.findings:
                    if f.start is not None and f.end is not None and f.start < cut < f.end:
                        cut = f.start
            if cut < len(pending) and any(v.findings for v in verdicts):  # nothing found: the cut text is unchanged
                text, verdicts, _ = self._check_text(guards, pending[:cut], plain, canary)
            elif cut < len(pending):
                text = text[:cut]
            seen.extend(v for v in verdicts if v.action != "allow")
            return text, cut

        async def on_end(full: str) -> None:
            if guards.active("grounding") and result.hits and policy.grounding.action != "off":
                started = time.perf_counter()
                score, unsupported = groundedness(full, [h.chunk.text for h in result.hits], support=policy.grounding.support)
                if score < policy.grounding.threshold:
                    v = verdict("grounding", "block" if policy.grounding.action == "block" else "flag", unsupported, started=started, score=score)
                    self._count([v])
                    if v.action == "block":
                        raise GuardrailBlocked("grounding", f"the answer is not supported by the retrieved context (score {score:.2f})")
            self._count(seen)

        return rewrite(completion, scan, on_end)

    def _buffered(self, guards: Guards, inner: Exchange, result: Exchange, call_next: Next, canary: str | None) -> Completion:
        """Schema-checked streams: collect, check (re-asking as needed), then send the answer as one delta."""
        completion = result.completion
        assert completion is not None

        async def run() -> AsyncIterator[Delta]:
            whole = dataclasses.replace(result, completion=await collect(completion))
            checked = await self._guard_whole(guards, inner, whole, call_next, canary)
            if checked.completion is None:
                assert checked.error is not None
                raise checked.error
            final = checked.completion
            yield Delta(
                text=final.text,
                finish_reason=final.finish_reason or "stop",
                usage=final.usage,
                timing=final.timing,
                cost_usd=final.cost_usd,
            )

        return dataclasses.replace(completion, stream=run())


def _cut_off_json(failure: _Failure, completion: Completion) -> bool:
    """Whether the JSON is invalid because the answer stopped at ``max_tokens``: re-asking with the same
    budget costs as much again and is cut off again (a small model inside a JSON string keeps writing)."""
    return (
        failure.guard == "json_schema"
        and completion.finish_reason == "length"
        and any(f.kind == "schema.invalid_json" for f in failure.findings)
    )


def _reask(inner: Exchange, answer: str, failure: _Failure) -> Exchange:
    request = inner.request
    fmt = request.params.response_format
    if failure.guard == "json_schema" and fmt is not None:
        note = reask_message(failure.findings, fmt)
    else:
        note = Message(
            role="user",
            content=f"Your previous answer was rejected by a content check ({failure.guard}). "
            "Answer the original request again without that problem.",
        )
    messages = (*request.messages, Message(role="assistant", content=answer), note)
    return dataclasses.replace(inner, request=dataclasses.replace(request, messages=messages, stream=False))


def _only_schema_failed(verdicts: Sequence[Verdict]) -> bool:
    """Whether the JSON-schema check is the only one that blocked (its re-asks having run out)."""
    return all(v.guard == "json_schema" for v in verdicts if v.action == "block")


def _mark_retried(v: Verdict, n: int) -> Verdict:
    if n == 0:
        return v
    return dataclasses.replace(v, findings=(*v.findings, Finding(kind=f"{v.guard}.retried", score=float(n), label=f"{n} re-asks")))


def _mask_terms(text: str, findings: Sequence[Finding]) -> str:
    out, pos = [], 0
    for f in without_overlaps(findings):
        out.append(text[pos : f.start or 0])
        out.append("[removed]")
        pos = f.end or 0
    out.append(text[pos:])
    return "".join(out)


def _window_exchange(result: Exchange) -> Exchange:
    """``result`` as the per-window checks of a stream see it: no schema, no hits (those are checked on the whole)."""
    params = dataclasses.replace(result.request.params, response_format=None)
    return dataclasses.replace(result, hits=(), request=dataclasses.replace(result.request, params=params))
