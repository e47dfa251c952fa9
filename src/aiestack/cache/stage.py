"""The Cache stage: serve a request from the exact or the semantic cache, or store its answer.

Its place in the onion is Trace → Limits → InputGuard → **Cache** → OutputGuard → Route → Context →
Generate. So it sees the request after the input guards (redacted: the same placeholders give the
same key, and the input guard restores each requester's own values in the answer), and it sees the
answer after the output guards: it stores only answers that no output guard blocked (nor flagged,
unless ``store_flagged``), only successful ones, and for a stream only one that ended cleanly.

On a hit the completion has ``cached=True``, zero usage and zero cost (nothing was spent on this
request); what was saved — the original answer's cost and tokens — goes to the exchange attributes
and the metrics. ``x-aiestack-cache`` on the response says ``hit``, ``semantic-hit``, ``miss`` or
``bypass`` (the request was not eligible: a temperature above 0, logprobs, ``cache: off``...).

A broken cache never breaks a request: a backend error is logged and the request goes on as a miss.

Single flight. Identical requests that arrive while the first of them is still being answered (same
exact-cache key: same route, tenant, messages and parameters) do not each call the model: the first
one leads, the others wait for its answer and are served it as a hit (``aiestack.cache.coalesced``
is true on their exchanges, and the lookup is counted as ``coalesced``). If the leader's answer is not
cacheable (an error, a blocked or flagged answer, a broken stream) the waiting requests go on to make
their own calls, as they would have without single flight. This coalesces within one process; across
gateway processes the shared cache backend serves repeats once the first answer is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from aiestack.cache.config import CachePolicy
from aiestack.cache.exact import ExactCache
from aiestack.cache.keying import exact_key, semantic_partition, split_last_user_turn
from aiestack.cache.semantic import SemanticCache
from aiestack.errors import AiestackError
from aiestack.monitoring import Metrics
from aiestack.pipeline import Next
from aiestack.stores.cache import CacheBackend, CachedAnswer, Entry
from aiestack.streams import single, tap
from aiestack.tracing import CACHE_KIND, defer
from aiestack.types import Completion, Exchange

_log = logging.getLogger(__name__)

#: Exchange attributes this stage sets.
CACHE_STATUS = "aiestack.cache"  # hit | semantic-hit | miss | bypass
CACHE_SIMILARITY = "aiestack.cache.similarity"  # the semantic hit's (or best candidate's) cosine
CACHE_REJECTED = "aiestack.cache.rejected"  # reasons the verifier turned candidates down
CACHE_SOURCE = "aiestack.cache.source_exchange"  # the exchange whose answer was served
CACHE_SAVED_USD = "aiestack.cache.saved_usd"
CACHE_SAVED_TOKENS = "aiestack.cache.saved_tokens"
CACHE_STORED = "aiestack.cache.stored"  # whether this answer was written to the cache
CACHE_COALESCED = "aiestack.cache.coalesced"  # served the answer of an identical request in flight
CACHE_HEADER = "x-aiestack-cache"

#: ``ChatRequest.metadata["cache"]``: off (no read, no write), refresh (no read), on (opt in).
REQUEST_FLAG = "cache"

Fingerprint = Callable[[str, Exchange], str]

#: How long a request waits for an identical one in flight before making its own call.
FLIGHT_WAIT_S = 300.0


def header_value(ex: Exchange) -> str | None:
    """The ``x-aiestack-cache`` value for an exchange, or None if no cache stage ran."""
    value = ex.attributes.get(CACHE_STATUS)
    return value if isinstance(value, str) else None


class CacheStage:
    """Exact then semantic lookup on the way in; storage of good answers on the way out.

    The policy is the one the exchange's plan carries (a route's ``[routes.NAME.cache]`` over the
    ``[cache]`` defaults); an exchange without a plan gets ``default``. ``semantic_ready()`` says whether the embedding model is loaded: until
    it is, lookups are exact only. ``fingerprint(route, exchange)`` returns what invalidates a route's entries when
    it changes (its config hash, prompt version, collection version); it is part of every key.
    """

    name = "cache"

    def __init__(
        self,
        exact: ExactCache | None,
        semantic: SemanticCache | None,
        *,
        default: CachePolicy | None = None,
        fingerprint: Fingerprint | None = None,
        metrics: Metrics | None = None,
        semantic_ready: Callable[[], bool] | None = None,
        carry: Collection[str] = (),
    ) -> None:
        self.exact = exact
        self.semantic = semantic
        self._default = default or CachePolicy()
        self._fingerprint = fingerprint or (lambda route, ex: "")
        self._metrics = metrics
        # Whether the embedding model is loaded; until then lookups are exact only, so a request
        # never waits seconds for a model to load (``aiestack serve`` loads it at start).
        self._semantic_ready = semantic_ready or (lambda: True)
        # Exchange attributes stored with an answer and recorded again on its hits (the prompt version).
        self._carry = tuple(carry)
        # Exact keys of requests being answered now → their answer (None: not cacheable).
        self._flights: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._writes: set[asyncio.Task[None]] = set()  # answers being stored, off the request path

    async def warm(self) -> None:
        """Load the semantic cache's own embedder now (one shared with the stack is the stack's to load)."""
        own = self.semantic.own_embeddings if self.semantic is not None else None
        load = getattr(own, "load", None)
        if load is not None:
            await load()

    async def settle(self) -> None:
        """Wait until every answer being stored is in the backend (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def aclose(self) -> None:
        """Finish the writes in progress, then release the backend's connections (the stack calls this)."""
        await self.settle()
        backends = {id(c.backend): c.backend for c in (self.exact, self.semantic) if c is not None}
        for backend in backends.values():
            await backend.aclose()

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        request = ex.request
        planned = ex.plan.part(CachePolicy) if ex.plan is not None else None
        policy = planned if planned is not None else self._default
        flag = request.metadata.get(REQUEST_FLAG, "")
        if not self._eligible(ex, policy, flag):
            return await call_next(_with(ex, {CACHE_STATUS: "bypass"}))
        route = request.model
        extra: dict[str, Any] = {}
        lead: asyncio.Future[CachedAnswer | None] | None = None  # set when this request leads a flight
        try:
            fingerprint = self._fingerprint(route, ex)
            key = (
                exact_key(request, tenant=ex.tenant, fingerprint=fingerprint)
                if policy.exact and self.exact is not None
                else None
            )
            semantic = policy.semantic and self.semantic is not None and self._semantic_ready()
            split = split_last_user_turn(request.messages) if semantic else None
            if split is not None and not _conversational(split[1].text, policy.semantic_max_chars):
                split = None  # a document or a templated prompt: small differences matter, exact only
            partition: str | None = None
            vector: np.ndarray | None = None
            if split is not None and self.semantic is not None:
                partition = semantic_partition(request, split[0], tenant=ex.tenant, fingerprint=fingerprint)
                partition += ":" + self.semantic.embeddings.name  # vectors of another embedder never mix
            read = flag != "refresh"
            if key is not None and self.exact is not None and read:
                entry = await self.exact.get(key, tenant=ex.tenant)
                if entry is not None:
                    self._count(ex, "exact", "hit")
                    return self._serve(ex, entry, "hit", None)
                flight = self._flights.get(key)
                if flight is None:
                    lead = self._flights[key] = asyncio.get_running_loop().create_future()
                else:
                    shared = await _wait(flight)
                    if shared is not None:  # one lookup, counted once: coalesced, not also a miss
                        self._count(ex, "exact", "coalesced")
                        shared_entry = _entry(key, ex.tenant, route, shared)
                        return self._serve(_with(ex, {CACHE_COALESCED: True}), shared_entry, "hit", None)
                self._count(ex, "exact", "miss")
            if partition is not None and split is not None and self.semantic is not None:
                vector = await self.semantic.embed(split[1].text)
                if read:
                    found = await self.semantic.lookup(
                        partition,
                        tenant=ex.tenant,
                        query=split[1].text,
                        vector=vector,
                        threshold=policy.threshold,
                    )
                    if found.rejected:
                        extra[CACHE_REJECTED] = tuple(r.reason for r in found.rejected)
                    if found.best is not None:
                        extra[CACHE_SIMILARITY] = round(found.best, 4)
                    if found.hit is not None:
                        self._count(ex, "semantic", "hit")
                        extra[CACHE_SIMILARITY] = round(found.hit.similarity, 4)
                        self._land(key, lead, found.hit.entry.answer)
                        return self._serve(
                            _with(ex, extra), found.hit.entry, "semantic-hit", found.hit.similarity
                        )
                    self._count(ex, "semantic", "rejected" if found.rejected else "miss")
        except AiestackError as exc:  # e.g. Redis down: answer without the cache
            _log.warning("cache lookup failed, answering without the cache: %s", exc)
            self._land(key, lead, None)
            return await call_next(_with(ex, {CACHE_STATUS: "miss"}))
        except BaseException:
            self._land(key, lead, None)
            raise
        query = split[1].text if split is not None else ""
        target = _Target(route, ex.tenant, key, partition, vector, query, lead)
        try:
            result = await call_next(_with(ex, {**extra, CACHE_STATUS: "miss"}))
        except BaseException:
            self._land(key, lead, None)
            raise
        return await self._keep(result, policy, target)

    # ------------------------------------------------------------------ single flight

    def _land(
        self, key: str | None, flight: asyncio.Future[CachedAnswer | None] | None, answer: CachedAnswer | None
    ) -> None:
        """End a flight this request leads (if any): the requests waiting on it get ``answer``."""
        if flight is None or flight.done():
            return
        flight.set_result(answer)
        if key is not None and self._flights.get(key) is flight:
            del self._flights[key]

    # ------------------------------------------------------------------ way in

    @staticmethod
    def _eligible(ex: Exchange, policy: CachePolicy, flag: str) -> bool:
        if flag == "off" or not policy.enabled:
            return False
        params = ex.request.params
        if params.logprobs:  # a cached answer carries no logprobs
            return False
        if flag == "on" or not policy.deterministic_only:
            return True
        return params.temperature == 0

    def _serve(self, ex: Exchange, entry: Entry, status: str, similarity: float | None) -> Exchange:
        completion = entry.answer.completion()
        if ex.request.stream:
            completion = single(completion)
        saved_usd = entry.answer.cost_usd or 0.0
        saved_tokens = entry.answer.usage.total_tokens
        attributes = {
            CACHE_STATUS: status,
            CACHE_KIND: entry.kind,
            CACHE_SAVED_USD: saved_usd,
            CACHE_SAVED_TOKENS: saved_tokens,
        }
        if entry.answer.exchange_id:
            attributes[CACHE_SOURCE] = entry.answer.exchange_id
        attributes.update({k: v for k, v in entry.answer.origin.items() if k in self._carry})
        route = _route_of(ex)
        if self._metrics is not None:
            self._metrics.cache_saved(route, entry.kind, saved_usd, saved_tokens)
        return dataclasses.replace(
            _with(ex, attributes), completion=completion, outcome="cached", route=route, hits=entry.answer.hits
        )

    def _count(self, ex: Exchange, kind: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.cache_lookup(_route_of(ex), kind, result)

    # ------------------------------------------------------------------ way out

    async def _keep(self, result: Exchange, policy: CachePolicy, target: _Target) -> Exchange:
        completion = result.completion
        if target.key is None and (target.partition is None or target.vector is None):
            return result
        if completion is None or result.outcome != "ok" or result.error is not None:
            self._land(target.key, target.flight, None)
            return result
        if not self._passed(result, policy):
            self._land(target.key, target.flight, None)
            return _with(result, {CACHE_STORED: False})
        if completion.stream is None:
            return _with(result, {CACHE_STORED: self._store_later(result, completion, policy, target)})

        async def on_done(final: Completion | None, error: BaseException | None) -> None:
            if error is None and final is not None:
                self._store_later(result, final, policy, target)
            else:
                self._land(target.key, target.flight, None)

        return dataclasses.replace(result, completion=tap(completion, on_done))

    def _store_later(self, result: Exchange, completion: Completion, policy: CachePolicy, target: _Target) -> bool:
        """Hand the answer to the requests waiting on this flight now, and store it in the background.

        The write (a database round trip or two) is not on the request path: the client has its answer
        before the cache has it. Until the write is done the flight stays open, answered, so that an
        identical request arriving meanwhile gets the answer from it instead of calling the model.
        Under a server, indexing the answer and starting its write (one backend call for both entries,
        ~0.3 M instructions of the event loop with the index insert: bench/miss_pieces.py's ``write``)
        wait until the response has been sent, as the trace record does (:func:`aiestack.tracing.defer`);
        elsewhere they happen at once.
        Returns whether the answer is cacheable (and so being stored).
        """
        answer = self._answer_of(result, completion)
        if answer is None:
            self._land(target.key, target.flight, None)
            return False
        if target.flight is not None and not target.flight.done():
            target.flight.set_result(answer)

        async def start() -> None:
            self._start_write(answer, policy, target)

        if not defer(start):
            self._start_write(answer, policy, target)
        return True

    def _start_write(self, answer: CachedAnswer, policy: CachePolicy, target: _Target) -> None:
        """Index the answer in the semantic index now and write it to the backend in a task of its own."""
        entry = None
        if target.partition is not None and target.vector is not None and self.semantic is not None:
            entry = self.semantic.index_now(  # the next lookup finds it, even before the write
                target.partition, tenant=target.tenant, route=target.route, query=target.query,
                vector=target.vector, answer=answer, ttl_s=policy.ttl_s,
            )
        task = asyncio.get_running_loop().create_task(self._store(answer, entry, policy, target))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    @staticmethod
    def _passed(ex: Exchange, policy: CachePolicy) -> bool:
        for verdict in ex.verdicts:
            if verdict.action == "block" or (verdict.action == "flag" and not policy.store_flagged):
                return False
        return True

    def _origin(self, result: Exchange) -> dict[str, Any]:
        return {k: result.attributes[k] for k in self._carry if k in result.attributes}

    def _answer_of(self, result: Exchange, completion: Completion) -> CachedAnswer | None:
        """The answer to cache, or None when it must not be (it did not finish)."""
        if completion.finish_reason not in ("stop", "length", "tool_calls"):
            return None
        return CachedAnswer.of(completion, result.id, self._origin(result), result.hits)

    async def _store(self, answer: CachedAnswer, entry: Entry | None, policy: CachePolicy, target: _Target) -> None:
        """Write the answer under the keys computed on the way in (inner stages may rewrite the request),
        then close the flight. A failed write is logged: the answer was served, only not cached.

        The semantic ``entry`` was indexed already (lookups find it); the exact key is covered by the
        still-open flight until its write is done. Both entries go to the backend in one
        :meth:`~aiestack.stores.cache.CacheBackend.put_many` (one worker hop and one transaction on
        SQL, one round trip on Redis); caches on two backends get one write each."""
        writes: dict[int, tuple[CacheBackend, list[Entry]]] = {}
        if entry is not None and self.semantic is not None:
            writes[id(self.semantic.backend)] = (self.semantic.backend, [entry])
        if target.key is not None and self.exact is not None:
            exact = self.exact.entry(
                target.key, tenant=target.tenant, route=target.route, answer=answer, ttl_s=policy.ttl_s
            )
            writes.setdefault(id(self.exact.backend), (self.exact.backend, []))[1].append(exact)
        try:
            for backend, entries in writes.values():
                try:
                    await backend.put_many(entries)
                except AiestackError as exc:
                    _log.warning("could not store an answer in the cache: %s", exc)
                except Exception:  # a background task: nothing above it would see the error
                    _log.error("could not store an answer in the cache", exc_info=True)
        finally:
            if entry is not None and self.semantic is not None:
                self.semantic.written(entry)
            if target.key is not None and self._flights.get(target.key) is target.flight:
                del self._flights[target.key]


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    """Where a request's answer goes: computed on the way in, used on the way out."""

    route: str
    tenant: str
    key: str | None
    partition: str | None
    vector: np.ndarray | None
    query: str
    flight: asyncio.Future[CachedAnswer | None] | None = None  # set when this request leads a flight


async def _wait(flight: asyncio.Future[CachedAnswer | None]) -> CachedAnswer | None:
    """The answer of the identical request in flight, once it has one (None: make your own call)."""
    try:
        return await asyncio.wait_for(asyncio.shield(flight), FLIGHT_WAIT_S)
    except TimeoutError:
        return None


def _route_of(ex: Exchange) -> str | None:
    """The exchange's route as its record and metrics name it (``None`` for a bare model: ``route="none"``
    in every metric), so that the cache's lookups, hits and savings join on one label."""
    return ex.route or (ex.plan.route if ex.plan is not None else None)


def _entry(key: str, tenant: str, route: str, answer: CachedAnswer) -> Entry:
    """An exact entry for an answer shared by single flight (never stored itself)."""
    return Entry(key=key, kind="exact", partition="", tenant=tenant, route=route, answer=answer, created_at=time.time())


def _conversational(text: str, max_chars: int) -> bool:
    """A question a person typed: short, at most two lines. Not a document or a filled-in template,
    whose meaning hangs on a few words in fixed places (a judge prompt with answers A and B swapped
    embeds almost identically and passes every lexical check)."""
    return len(text) <= max_chars and text.strip().count("\n") <= 1


def _with(ex: Exchange, attributes: Mapping[str, Any]) -> Exchange:
    return dataclasses.replace(ex, attributes={**ex.attributes, **attributes})
