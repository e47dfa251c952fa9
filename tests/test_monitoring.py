"""Prometheus instruments: exchange-level observations, wing events, label caps, isolated registries."""

from __future__ import annotations

import dataclasses

import pytest

from aiestack.monitoring import INSTRUMENTS, Metrics
from aiestack.stores.base import ExchangeRecord

pytestmark = pytest.mark.unit

LABELS = {"model": "gpt-4o", "provider": "openai", "route": "support"}


def _record(**changes: object) -> ExchangeRecord:
    base = ExchangeRecord(
        id="ex_1",
        created_at=0.0,
        model="gpt-4o",
        outcome="ok",
        provider="openai",
        route="support",
        tenant="acme-private-tenant",
        input_tokens=120,
        output_tokens=30,
        ttft_ms=250.0,
        tpot_ms=20.0,
        total_ms=900.0,
        cost_usd=0.0006,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_an_ok_exchange_updates_latency_tokens_and_cost() -> None:
    m = Metrics()
    m.observe_exchange(_record())
    m.observe_exchange(_record(output_tokens=10, cost_usd=0.0004))
    get = m.registry.get_sample_value
    assert get("gen_ai_server_request_duration_seconds_count", {**LABELS, "outcome": "ok"}) == 2
    assert get("gen_ai_server_request_duration_seconds_sum", {**LABELS, "outcome": "ok"}) == pytest.approx(
        1.8
    )
    assert get("gen_ai_server_time_to_first_token_seconds_sum", LABELS) == pytest.approx(0.5)
    # 0.25 s falls in the 0.25 bucket but not the 0.1 one.
    assert get("gen_ai_server_time_to_first_token_seconds_bucket", {**LABELS, "le": "0.1"}) == 0
    assert get("gen_ai_server_time_to_first_token_seconds_bucket", {**LABELS, "le": "0.25"}) == 2
    assert get("gen_ai_server_time_per_output_token_seconds_sum", LABELS) == pytest.approx(0.04)
    assert get("gen_ai_client_token_usage_sum", {**LABELS, "token_type": "input"}) == 240
    assert get("gen_ai_client_token_usage_sum", {**LABELS, "token_type": "output"}) == 40
    assert get("aiestack_cost_usd_total", LABELS) == pytest.approx(0.001)


def test_an_error_counts_its_duration_and_tokens_but_no_generation_latency() -> None:
    m = Metrics()
    m.observe_exchange(_record(outcome="error", ttft_ms=40.0, output_tokens=0, cost_usd=None))
    get = m.registry.get_sample_value
    assert get("gen_ai_server_request_duration_seconds_count", {**LABELS, "outcome": "error"}) == 1
    assert get("gen_ai_server_time_to_first_token_seconds_count", LABELS) is None
    assert get("gen_ai_client_token_usage_count", {**LABELS, "token_type": "input"}) == 1
    assert get("gen_ai_client_token_usage_count", {**LABELS, "token_type": "output"}) is None
    assert get("aiestack_cost_usd_total", LABELS) is None


def test_a_cached_answer_counts_a_hit_and_no_tokens() -> None:
    m = Metrics()
    m.observe_exchange(_record(outcome="cached", cached=True, attributes={"aiestack.cache.kind": "semantic"}))
    m.observe_exchange(_record(outcome="cached", cached=True))
    get = m.registry.get_sample_value
    assert get("aiestack_cache_hits_total", {"route": "support", "kind": "semantic"}) == 1
    assert get("aiestack_cache_hits_total", {"route": "support", "kind": "none"}) == 1
    assert get("gen_ai_client_token_usage_count", {**LABELS, "token_type": "input"}) is None
    assert get("aiestack_cost_usd_total", LABELS) is None
    assert get("gen_ai_server_request_duration_seconds_count", {**LABELS, "outcome": "cached"}) == 2


def test_labels_never_carry_the_tenant_and_missing_values_read_none() -> None:
    m = Metrics()
    m.observe_exchange(_record(provider=None, route=None, outcome="error"))
    text = m.render().decode()
    assert "acme-private-tenant" not in text
    assert 'provider="none",route="none"' in text


def test_free_text_models_are_capped_to_other() -> None:
    m = Metrics(max_label_values=2)
    for name in ("a", "b", "made-up-1", "made-up-2", "a"):
        m.observe_exchange(_record(model=name, outcome="error"))
    get = m.registry.get_sample_value
    labels = {"provider": "openai", "route": "support", "outcome": "error"}
    assert get("gen_ai_server_request_duration_seconds_count", {**labels, "model": "a"}) == 2
    assert get("gen_ai_server_request_duration_seconds_count", {**labels, "model": "b"}) == 1
    assert get("gen_ai_server_request_duration_seconds_count", {**labels, "model": "other"}) == 2
    assert "made-up" not in m.render().decode()


def test_labels_seen_again_count_the_same_way() -> None:
    """The labels of a combination are remembered: a capped name stays ``other``, an instrument a
    combination never observed stays unexported until it does, and the same (model, provider,
    route) under another outcome observes into the same series."""
    m = Metrics(max_label_values=1)
    for _ in range(2):
        m.observe_exchange(_record(model="a", outcome="error", ttft_ms=40.0, output_tokens=0, cost_usd=None))
        m.observe_exchange(_record(model="made-up", outcome="error"))
    get = m.registry.get_sample_value
    labels = {"provider": "openai", "route": "support"}
    assert get("gen_ai_server_request_duration_seconds_count", {**labels, "model": "a", "outcome": "error"}) == 2
    assert get("gen_ai_server_request_duration_seconds_count", {**labels, "model": "other", "outcome": "error"}) == 2
    assert get("gen_ai_server_time_to_first_token_seconds_count", {**labels, "model": "a"}) is None
    assert "gen_ai_server_time_to_first_token_seconds_count{" not in m.render().decode()
    m.observe_exchange(_record(model="a"))
    assert get("gen_ai_server_time_to_first_token_seconds_count", {**labels, "model": "a"}) == 1
    assert get("gen_ai_client_token_usage_count", {**labels, "model": "a", "token_type": "input"}) == 3


def test_wing_events_are_counted() -> None:
    m = Metrics()
    m.guard_action("pii", "redact", direction="input")
    m.guard_action("pii", "redact", direction="input")
    m.limit_rejection("rpm")
    m.retry("openai", "gpt-4o", "ProviderRateLimited")
    m.fallback("gpt-4o", "gpt-4o-mini", "ProviderUnavailable")
    m.breaker_state("openai/gpt-4o", "open")
    m.observe_overhead(0.002, route="support")
    get = m.registry.get_sample_value
    assert (
        get("aiestack_guard_actions_total", {"guard": "pii", "action": "redact", "direction": "input"}) == 2
    )
    assert get("aiestack_limit_rejections_total", {"limit": "rpm"}) == 1
    assert (
        get(
            "aiestack_retries_total",
            {"provider": "openai", "model": "gpt-4o", "reason": "ProviderRateLimited"},
        )
        == 1
    )
    fallback = {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "reason": "ProviderUnavailable"}
    assert get("aiestack_fallbacks_total", fallback) == 1
    assert get("aiestack_breaker_state", {"target": "openai/gpt-4o"}) == 2
    m.breaker_state("openai/gpt-4o", "half_open")
    assert get("aiestack_breaker_state", {"target": "openai/gpt-4o"}) == 1
    assert get("aiestack_gateway_overhead_seconds_bucket", {"route": "support", "le": "0.001"}) == 0
    assert get("aiestack_gateway_overhead_seconds_bucket", {"route": "support", "le": "0.0025"}) == 1


def test_render_gives_the_exposition_text() -> None:
    m = Metrics()
    m.observe_exchange(_record())
    text = m.render().decode()
    for name in (
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_server_time_per_output_token_seconds_bucket",
        "gen_ai_server_request_duration_seconds_bucket",
        "gen_ai_client_token_usage_bucket",
        "aiestack_cost_usd_total",
    ):
        assert f"{name}{{" in text
    for declared in (  # declared even before anything happened, so dashboards and alerts find them
        "aiestack_cache_hits_total counter",
        "aiestack_guard_actions_total counter",
        "aiestack_limit_rejections_total counter",
        "aiestack_retries_total counter",
        "aiestack_fallbacks_total counter",
        "aiestack_breaker_state gauge",
        "aiestack_gateway_overhead_seconds histogram",
        "aiestack_pending_feedback_total counter",
    ):
        assert f"# TYPE {declared}\n" in text
    assert m.content_type.startswith("text/plain")


def test_two_instances_keep_separate_counts() -> None:
    a, b = Metrics(), Metrics()
    a.observe_exchange(_record())
    assert a.registry.get_sample_value("aiestack_cost_usd_total", LABELS) == pytest.approx(0.0006)
    assert b.registry.get_sample_value("aiestack_cost_usd_total", LABELS) is None


def test_every_instrument_is_declared_once_with_its_pinned_name_kind_and_labels() -> None:
    pinned = {  # name, type and labels are what dashboards and alerts read: changing one breaks them
        "time_to_first_token": ("gen_ai_server_time_to_first_token_seconds", "histogram", ("model", "provider", "route")),
        "time_per_output_token": ("gen_ai_server_time_per_output_token_seconds", "histogram", ("model", "provider", "route")),
        "request_duration": ("gen_ai_server_request_duration_seconds", "histogram", ("model", "provider", "route", "outcome")),
        "token_usage": ("gen_ai_client_token_usage", "histogram", ("model", "provider", "route", "token_type")),
        "cost": ("aiestack_cost_usd", "counter", ("model", "provider", "route")),
        "cache_hits": ("aiestack_cache_hits", "counter", ("route", "kind")),
        "cache_lookups": ("aiestack_cache_lookups", "counter", ("route", "kind", "result")),
        "cache_saved_usd": ("aiestack_cache_saved_usd", "counter", ("route", "kind")),
        "cache_saved_tokens": ("aiestack_cache_saved_tokens", "counter", ("route", "kind")),
        "guard_actions": ("aiestack_guard_actions", "counter", ("guard", "action", "direction")),
        "limit_rejections": ("aiestack_limit_rejections", "counter", ("limit",)),
        "retries": ("aiestack_retries", "counter", ("provider", "model", "reason")),
        "fallbacks": ("aiestack_fallbacks", "counter", ("from_model", "to_model", "reason")),
        "breaker": ("aiestack_breaker_state", "gauge", ("target",)),
        "gateway_overhead": ("aiestack_gateway_overhead_seconds", "histogram", ("route",)),
        "pending_feedback": ("aiestack_pending_feedback", "counter", ("outcome",)),
    }
    m = Metrics()
    assert [i.attr for i in INSTRUMENTS] == list(pinned) == list(Metrics.__annotations__)
    for attr, (name, kind, labels) in pinned.items():
        instrument = getattr(m, attr)
        assert (instrument._name, instrument._type, instrument._labelnames) == (name, kind, labels)
