"""Prometheus instruments: GenAI latency and token histograms, cost, cache, guard, limit and gateway counters.

Names follow the OpenTelemetry GenAI metric conventions translated to Prometheus
(``gen_ai.server.time_to_first_token`` → ``gen_ai_server_time_to_first_token_seconds``); the
histogram buckets are the ones those conventions advise, so dashboards built for them work.

Design choices:

- :class:`Metrics` owns its own ``CollectorRegistry``: nothing is registered globally, so two apps
  (or two tests) in one process keep separate counts, and plugins add their instruments to
  :attr:`Metrics.registry` (the ``register_metrics`` hook).
- Labels are low-cardinality by construction: model, provider, route, outcome and names that come
  from code (guards, limits). Never the tenant or any other free text. Because a client can name a
  model that does not exist, every label is capped at ``max_label_values`` distinct values per
  label; later newcomers are reported as ``other`` instead of growing the series without bound.
- The exchange-level instruments are fed from the stored :class:`ExchangeRecord` (one call per
  exchange, from the Trace stage), so metrics and the exchange log agree by construction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aiestack.stores.base import ExchangeRecord
from aiestack.tracing import CACHE_KIND

# Bucket boundaries advised by the OpenTelemetry GenAI metric conventions (seconds / tokens).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# The gateway's own work should take well under a millisecond to a few milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

OTHER = "other"
NONE = "none"
BreakerState = Literal["closed", "half_open", "open"]
_BREAKER_VALUES: dict[str, float] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class _LabelCap:
    """Bounds the distinct values seen per label name; beyond the cap a value becomes ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: str | None) -> str:
        if not value:
            return NONE
        seen = self._seen.get(label)
        if seen is not None and value in seen:  # the common case: no lock
            return value
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) >= self._limit:
                return OTHER
            seen.add(value)
            return value


_MODEL_LABELS = ("model", "provider", "route")
_CACHE_LABELS = ("route", "kind")


@dataclass(frozen=True, slots=True)
class _Instrument:
    """One Prometheus instrument of :class:`Metrics`: the attribute that holds it, and its declaration."""

    attr: str
    kind: type[Histogram] | type[Counter] | type[Gauge]
    name: str
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None

    def build(self, registry: CollectorRegistry) -> Histogram | Counter | Gauge:
        if self.buckets is not None:
            return Histogram(self.name, self.documentation, self.labels, buckets=self.buckets, registry=registry)
        return self.kind(self.name, self.documentation, self.labels, registry=registry)


#: Every instrument, declared once; :class:`Metrics` builds each in its own registry.
INSTRUMENTS: tuple[_Instrument, ...] = (
    _Instrument(
        "time_to_first_token", Histogram, "gen_ai_server_time_to_first_token_seconds",
        "Time to generate the first token of a successful answer.", _MODEL_LABELS, TTFT_BUCKETS,
    ),
    _Instrument(
        "time_per_output_token", Histogram, "gen_ai_server_time_per_output_token_seconds",
        "Mean time per output token after the first, per successful answer.", _MODEL_LABELS, TPOT_BUCKETS,
    ),
    _Instrument(
        "request_duration", Histogram, "gen_ai_server_request_duration_seconds",
        "Exchange duration as the caller saw it, from arrival to the end of the answer (or error).",
        (*_MODEL_LABELS, "outcome"), DURATION_BUCKETS,
    ),
    _Instrument(
        "token_usage", Histogram, "gen_ai_client_token_usage",
        "Tokens used per exchange, by token type (input / output). Cached answers use none.",
        (*_MODEL_LABELS, "token_type"), TOKEN_BUCKETS,
    ),
    _Instrument("cost", Counter, "aiestack_cost_usd", "Money spent on provider calls (USD, list prices).", _MODEL_LABELS),
    _Instrument("cache_hits", Counter, "aiestack_cache_hits", "Answers served from the cache, by cache kind.", _CACHE_LABELS),
    _Instrument(
        "cache_lookups", Counter, "aiestack_cache_lookups",
        "Cache lookups by cache kind (exact / semantic) and result (hit / miss / rejected by the verifier).",
        (*_CACHE_LABELS, "result"),
    ),
    _Instrument(
        "cache_saved_usd", Counter, "aiestack_cache_saved_usd",
        "Provider cost that cache hits saved (USD: what the cached answer cost when it was made).", _CACHE_LABELS,
    ),
    _Instrument(
        "cache_saved_tokens", Counter, "aiestack_cache_saved_tokens",
        "Tokens (input + output) that cache hits saved.", _CACHE_LABELS,
    ),
    _Instrument(
        "guard_actions", Counter, "aiestack_guard_actions",
        "Guardrail verdicts other than allow, by guard, action and direction (input / output).",
        ("guard", "action", "direction"),
    ),
    _Instrument(
        "limit_rejections", Counter, "aiestack_limit_rejections",
        "Requests rejected by a limit (rpm, tpm, budget, ...).", ("limit",),
    ),
    _Instrument(
        "retries", Counter, "aiestack_retries",
        "Provider calls retried, by the error that caused it.", ("provider", "model", "reason"),
    ),
    _Instrument(
        "fallbacks", Counter, "aiestack_fallbacks",
        "Requests that fell back to another model, by the error that caused it.", ("from_model", "to_model", "reason"),
    ),
    _Instrument(
        "breaker", Gauge, "aiestack_breaker_state",
        "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.", ("target",),
    ),
    _Instrument(
        "gateway_overhead", Histogram, "aiestack_gateway_overhead_seconds",
        "Time the gateway adds on top of the provider's own time (stages, routing, bookkeeping).",
        ("route",), OVERHEAD_BUCKETS,
    ),
    _Instrument(
        "pending_feedback", Counter, "aiestack_pending_feedback",
        "Feedback sent before its exchange was stored, by outcome: accepted (kept pending), stored, "
        "dropped_tenant (another tenant's exchange), dropped_expired (no exchange in time).",
        ("outcome",),
    ),
)


#: How many (model, provider, route, outcome) combinations :class:`Metrics` remembers the labels of.
_EXCHANGE_LABELS_KEPT = 1024


class _ExchangeLabels:
    """One combination's capped label values, and the instrument children made for it so far (by slot)."""

    __slots__ = ("_children", "_make", "values")

    def __init__(self, values: tuple[str, str, str, str], make: Callable[..., Any]) -> None:
        self.values = values
        self._make = make
        self._children: list[Any] = [None] * 6

    def child(self, slot: int, metric: Histogram | Counter, *labels: str) -> Any:
        """``metric.labels(*labels)``, made when first observed (a child that was never observed is not exported)."""
        found = self._children[slot]
        if found is None:
            found = self._children[slot] = self._make(metric, *labels)
        return found


class Metrics:
    """The Prometheus instruments of one aiestack app, in their own registry.

    ``observe_exchange`` feeds the exchange-level instruments; the wings call the small methods
    (``guard_action``, ``limit_rejection``, ``retry``, ``fallback``, ``breaker_state``) as things happen.
    The instruments are declared once, in :data:`INSTRUMENTS`; the attributes below hold them.
    """

    time_to_first_token: Histogram
    time_per_output_token: Histogram
    request_duration: Histogram
    token_usage: Histogram
    cost: Counter
    cache_hits: Counter
    cache_lookups: Counter
    cache_saved_usd: Counter
    cache_saved_tokens: Counter
    guard_actions: Counter
    limit_rejections: Counter
    retries: Counter
    fallbacks: Counter
    breaker: Gauge
    gateway_overhead: Histogram
    pending_feedback: Counter

    def __init__(self, *, max_label_values: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._cap = _LabelCap(max_label_values)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._exchange: dict[tuple[str, str | None, str | None, str], _ExchangeLabels] = {}
        for instrument in INSTRUMENTS:
            setattr(self, instrument.attr, instrument.build(self.registry))

    # ------------------------------------------------------------------ exchange level

    def _child(self, metric: Histogram | Counter, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client builds and locks on every call.

        The label cap bounds the distinct values, so this stays as small as the registry itself.
        """
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_exchange(self, record: ExchangeRecord) -> None:
        """Update the exchange-level instruments from a final exchange record."""
        labels = self._exchange_labels(record.model, record.provider, record.route, record.outcome)
        model, provider, route, outcome = labels.values
        child = labels.child
        if record.total_ms is not None:
            child(0, self.request_duration, model, provider, route, outcome).observe(record.total_ms / 1000)
        if record.cached or record.outcome == "cached":
            kind = record.attributes.get(CACHE_KIND)
            self._child(self.cache_hits, route, self._cap("cache_kind", kind if isinstance(kind, str) else None)).inc()
            return  # a cached answer used no tokens and took no generation time
        if record.outcome == "ok":
            if record.ttft_ms is not None:
                child(1, self.time_to_first_token, model, provider, route).observe(record.ttft_ms / 1000)
            if record.tpot_ms is not None:
                child(2, self.time_per_output_token, model, provider, route).observe(record.tpot_ms / 1000)
        if record.input_tokens > 0:
            child(3, self.token_usage, model, provider, route, "input").observe(record.input_tokens)
        if record.output_tokens > 0:
            child(4, self.token_usage, model, provider, route, "output").observe(record.output_tokens)
        if record.cost_usd:
            child(5, self.cost, model, provider, route).inc(max(record.cost_usd, 0.0))

    def _exchange_labels(self, model: str, provider: str | None, route: str | None, outcome: str) -> _ExchangeLabels:
        """The capped labels of an exchange's (model, provider, route, outcome), and its instruments' children,
        remembered: the label cap maps a value the same way every time, so only new combinations pay for it."""
        key = (model, provider, route, outcome)
        labels = self._exchange.get(key)
        if labels is None:
            if len(self._exchange) >= _EXCHANGE_LABELS_KEPT:
                self._exchange.clear()
            cap = self._cap
            values = (cap("model", model), cap("provider", provider), cap("route", route), cap("outcome", outcome))
            labels = self._exchange[key] = _ExchangeLabels(values, self._child)
        return labels

    def observe_overhead(self, seconds: float, *, route: str | None) -> None:
        """The gateway's own time for one exchange (its duration minus the provider's)."""
        self._child(self.gateway_overhead, self._cap("route", route)).observe(max(seconds, 0.0))

    # ------------------------------------------------------------------ events from the wings

    def guard_action(self, guard: str, action: str, *, direction: Literal["input", "output"]) -> None:
        self._child(self.guard_actions, self._cap("guard", guard), self._cap("action", action), direction).inc()

    def cache_lookup(self, route: str | None, kind: str, result: str) -> None:
        """One cache lookup; hit rate = hits / all lookups of a kind."""
        cap = self._cap
        self._child(self.cache_lookups, cap("route", route), cap("cache_kind", kind), cap("cache_result", result)).inc()

    def cache_saved(self, route: str | None, kind: str, usd: float, tokens: int) -> None:
        """What a cache hit saved: the cost and the tokens of the answer it served."""
        labels = (self._cap("route", route), self._cap("cache_kind", kind))
        self._child(self.cache_saved_usd, *labels).inc(max(usd, 0.0))
        self._child(self.cache_saved_tokens, *labels).inc(max(tokens, 0))

    def limit_rejection(self, limit: str) -> None:
        self.limit_rejections.labels(self._cap("limit", limit)).inc()

    def retry(self, provider: str, model: str, reason: str) -> None:
        cap = self._cap
        self.retries.labels(cap("provider", provider), cap("model", model), cap("reason", reason)).inc()

    def fallback(self, from_model: str, to_model: str, reason: str) -> None:
        cap = self._cap
        self.fallbacks.labels(cap("model", from_model), cap("model", to_model), cap("reason", reason)).inc()

    def pending_feedback_outcome(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` pending feedback items with this outcome (see :mod:`aiestack.feedback.pending`)."""
        self._child(self.pending_feedback, outcome).inc(n)

    def breaker_state(self, target: str, state: BreakerState) -> None:
        self.breaker.labels(self._cap("target", target)).set(_BREAKER_VALUES[state])

    # ------------------------------------------------------------------ exposition

    content_type = CONTENT_TYPE_LATEST

    def render(self) -> bytes:
        """The Prometheus text exposition of every instrument in this registry."""
        return generate_latest(self.registry)
