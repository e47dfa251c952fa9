"""Routes from config: validation errors that name the key and the fix, and the plans they produce."""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from typing import Any

import pytest

from aiestack.errors import ConfigError, ModelNotFound
from aiestack.gateway.breaker import BreakerSettings
from aiestack.gateway.retry import NO_RETRY, RetryPolicy
from aiestack.gateway.routes import RouteTable, build_route_table
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry, ModelRegistry

pytestmark = pytest.mark.unit

CONFIG = """
[routes.chat]
deployments = [{ model = "gpt-4o-mini", weight = 3 }, { model = "local-vllm", weight = 1 }]
fallbacks = ["claude", "gemma-3-270m"]
timeout_s = 30
retries = 2
backoff_base_s = 0.25
backoff_max_s = 8
[routes.chat.breaker]
failures = 5
cooldown_s = 30
"""


def _models(*names: str) -> ModelRegistry:
    fake = FakeModel()
    return ModelRegistry(ModelEntry(n, fake, n) for n in names)


MODELS = _models("gpt-4o-mini", "local-vllm", "claude", "gemma-3-270m", "big")


def _table(routes: dict[str, Any], models: ModelRegistry = MODELS) -> RouteTable:
    return build_route_table(routes, models)


def _config_error(routes: dict[str, Any], models: ModelRegistry = MODELS) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_route_table(routes, models)
    return info.value


def test_the_documented_example_plans_deployments_then_fallbacks() -> None:
    table = _table(tomllib.loads(CONFIG)["routes"])
    plan = table.plan("chat", random.Random(0))
    assert plan.route == "chat"
    models = [a.model for a in plan.attempts]
    assert sorted(models[:2]) == ["gpt-4o-mini", "local-vllm"]
    assert models[2:] == ["claude", "gemma-3-270m"]
    assert [a.role for a in plan.attempts] == ["deployment", "deployment", "fallback", "fallback"]
    policy = RetryPolicy(retries=2, base_s=0.25, max_s=8.0)
    assert all(a.policy == policy and a.timeout_s == 30 and a.breaker for a in plan.attempts)
    # The two deployments are one group (a context-length error skips both); each fallback its own.
    groups = [a.group for a in plan.attempts]
    assert groups[0] == groups[1] and len({groups[0], groups[2], groups[3]}) == 3
    assert table.breaker_settings == {
        m: BreakerSettings(failures=5, cooldown_s=30.0)
        for m in ("gpt-4o-mini", "local-vllm", "claude", "gemma-3-270m")
    }


def test_weights_decide_the_first_choice_statistically() -> None:
    table = _table(tomllib.loads(CONFIG)["routes"])
    rng = random.Random(1234)
    firsts = Counter(table.plan("chat", rng).attempts[0].model for _ in range(4000))
    assert firsts["gpt-4o-mini"] / 4000 == pytest.approx(0.75, abs=0.03)
    assert firsts["local-vllm"] / 4000 == pytest.approx(0.25, abs=0.03)


def test_later_deployments_are_also_weighted_among_those_left() -> None:
    routes = {
        "r": {
            "deployments": [
                {"model": "claude", "weight": 8},
                {"model": "big", "weight": 1},
                {"model": "local-vllm", "weight": 1},
            ]
        }
    }
    table = _table(routes)
    rng = random.Random(99)
    seconds: Counter[str] = Counter()
    for _ in range(4000):
        plan = table.plan("r", rng)
        assert sorted(a.model for a in plan.attempts) == ["big", "claude", "local-vllm"]
        if plan.attempts[0].model == "claude":
            seconds[plan.attempts[1].model] += 1
    total = sum(seconds.values())
    assert total / 4000 == pytest.approx(0.8, abs=0.03)
    assert seconds["big"] / total == pytest.approx(0.5, abs=0.05)  # equal weights among the rest


def test_a_bare_model_is_one_call_without_retries_or_breaker() -> None:
    table = _table(tomllib.loads(CONFIG)["routes"])
    plan = table.plan("claude", random.Random(0))
    assert plan.route is None
    (attempt,) = plan.attempts
    assert attempt.model == "claude" and attempt.policy == NO_RETRY
    assert attempt.timeout_s is None and not attempt.breaker and attempt.role == "model"


def test_an_empty_table_still_resolves_models_with_the_registry_error() -> None:
    table = RouteTable(MODELS)
    assert table.plan("big", random.Random(0)).attempts[0].model == "big"
    with pytest.raises(ModelNotFound, match="Did you mean 'claude'"):
        table.plan("claud", random.Random(0))


def test_an_unknown_name_suggests_models_and_routes() -> None:
    table = _table({"support": {"deployments": ["big"]}})
    with pytest.raises(ModelNotFound) as info:
        table.plan("suport", random.Random(0))
    assert "Did you mean 'support'" in str(info.value)
    assert "routes: support" in str(info.value)
    assert info.value.http_status == 404


def test_a_fallback_route_expands_with_its_own_policy_and_models_appear_once() -> None:
    routes = {
        "main": {
            "deployments": ["gpt-4o-mini", "local-vllm"],
            "fallbacks": ["backup", "claude"],
            "retries": 1,
        },
        "backup": {
            "deployments": ["claude", "big"],
            "fallbacks": ["gpt-4o-mini"],
            "retries": 0,
            "timeout_s": 5,
        },
    }
    plan = _table(routes).plan("main", random.Random(3))
    models = [a.model for a in plan.attempts]
    assert sorted(models[:2]) == ["gpt-4o-mini", "local-vllm"]
    assert sorted(models[2:]) == ["big", "claude"]  # gpt-4o-mini and claude are not tried twice
    backup = [a for a in plan.attempts if a.route == "backup"]
    assert {a.model for a in backup} == {"big", "claude"}
    assert all(a.policy.retries == 0 and a.timeout_s == 5 for a in backup)
    assert all(a.policy.retries == 1 for a in plan.attempts if a.route == "main")


def test_deployments_may_be_plain_names_with_equal_weights() -> None:
    table = _table({"r": {"deployments": ["claude", "big"]}})
    rng = random.Random(5)
    firsts = Counter(table.plan("r", rng).attempts[0].model for _ in range(2000))
    assert firsts["claude"] / 2000 == pytest.approx(0.5, abs=0.04)


def test_a_timeout_can_be_switched_off_and_defaults_apply() -> None:
    table = _table({"r": {"deployments": ["claude"], "timeout_s": None}, "s": {"deployments": ["big"]}})
    assert table.plan("r", random.Random(0)).attempts[0].timeout_s is None
    (attempt,) = table.plan("s", random.Random(0)).attempts
    assert attempt.timeout_s == 30.0 and attempt.policy == RetryPolicy(retries=2, base_s=0.25, max_s=8.0)
    assert table.names == ("r", "s") and "r" in table and "claude" not in table and len(table) == 2


# --------------------------------------------------------------------------- configuration errors


def test_unknown_deployment_model_names_the_key_and_suggests() -> None:
    error = _config_error({"chat": {"deployments": [{"model": "gpt-4o-mnii"}]}})
    assert error.key == "routes.chat.deployments.0.model"
    assert "unknown model 'gpt-4o-mnii'" in str(error) and "did you mean 'gpt-4o-mini'" in str(error)


def test_unknown_fallback_is_an_error() -> None:
    error = _config_error({"chat": {"deployments": ["big"], "fallbacks": ["nope"]}})
    assert error.key == "routes.chat.fallbacks.0" and "unknown model or route 'nope'" in str(error)


def test_route_named_like_a_model_is_an_error() -> None:
    error = _config_error({"claude": {"deployments": ["big"]}})
    assert error.key == "routes.claude" and "configured model" in str(error)


@pytest.mark.parametrize("weight", [0, -1.5])
def test_weights_must_be_positive(weight: float) -> None:
    error = _config_error({"chat": {"deployments": [{"model": "big", "weight": weight}]}})
    assert error.key == "routes.chat.deployments.0.weight"
    assert "greater than 0" in str(error)


def test_unknown_keys_are_rejected_with_a_suggestion() -> None:
    error = _config_error({"chat": {"deployments": ["big"], "retrys": 3}})
    assert error.key == "routes.chat.retrys" and "did you mean 'retries'" in str(error)
    error = _config_error({"chat": {"deployments": ["big"], "breaker": {"failure": 3}}})
    assert error.key == "routes.chat.breaker.failure"


def test_a_route_needs_deployments() -> None:
    assert _config_error({"chat": {"deployments": []}}).key == "routes.chat.deployments"
    assert _config_error({"chat": {"fallbacks": ["big"]}}).key == "routes.chat.deployments"


def test_fallback_cycles_are_rejected() -> None:
    error = _config_error(
        {
            "a": {"deployments": ["big"], "fallbacks": ["b"]},
            "b": {"deployments": ["claude"], "fallbacks": ["c"]},
            "c": {"deployments": ["local-vllm"], "fallbacks": ["a"]},
        }
    )
    assert "cycle: a → b → c → a" in str(error)
    assert _config_error({"a": {"deployments": ["big"], "fallbacks": ["a"]}}).key == "routes.a.fallbacks.0"


def test_a_deployment_must_be_a_model_not_a_route() -> None:
    error = _config_error({"a": {"deployments": ["big"]}, "b": {"deployments": ["a"]}})
    assert error.key == "routes.b.deployments.0.model" and "fallbacks instead" in str(error)


def test_a_model_listed_twice_as_a_deployment_is_an_error() -> None:
    error = _config_error({"a": {"deployments": ["big", {"model": "big", "weight": 2}]}})
    assert "listed twice" in str(error)


def test_backoff_max_below_base_is_an_error() -> None:
    error = _config_error({"a": {"deployments": ["big"], "backoff_base_s": 2, "backoff_max_s": 1}})
    assert error.key.startswith("routes.a") and "backoff_max_s" in str(error)


def test_shared_models_need_one_breaker_setting() -> None:
    error = _config_error(
        {
            "a": {"deployments": ["big"], "breaker": {"failures": 3}},
            "b": {"deployments": ["big"], "breaker": {"failures": 4}},
        }
    )
    assert error.key == "routes.b.breaker" and "routes.a.breaker" in str(error)
    # A route that sets no breaker defers to the one that does; equal settings agree.
    table = _table(
        {
            "a": {"deployments": ["big"], "breaker": {"failures": 3}},
            "b": {"deployments": ["big", "claude"]},
            "c": {"deployments": ["claude"], "fallbacks": ["big"], "breaker": {"failures": 3}},
        }
    )
    assert table.breaker_settings["big"] == BreakerSettings(failures=3, cooldown_s=30.0)
    assert table.breaker_settings["claude"].failures == 3
