"""The Prompt stage in a real stack: a route's ``name@label`` rendered as the system prompt,
label moves applied without a restart, A/B arms stable per user, the version recorded."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiestack.build import Stack, build_stack
from aiestack.errors import ConfigError
from aiestack.guardrails.canary import is_canary_line
from aiestack.models.fake import FakeModel
from aiestack.prompts import PromptUnavailable, TemplateError
from aiestack.settings import PromptSettings, Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.prompts import PROMPT_LABEL_ATTR, PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR
from aiestack.types import ChatRequest, Message, Params

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, prompt: str | None, **overrides: Any) -> Settings:
    route: dict[str, Any] = {"deployments": ["fake"]}
    if prompt is not None:
        route["prompt"] = prompt
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        routes={"help": route},
        prompts=PromptSettings(label_cache_s=0),
        **overrides,
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = build_stack(_settings(tmp_path, "support@production"), store=MemoryExchangeStore())
    yield stack
    await stack.aclose()


def fake(stack: Stack) -> FakeModel:
    provider = stack.models.resolve("fake").provider
    assert isinstance(provider, FakeModel)
    return provider


def ask(text: str, *, system: str | None = None, user: str | None = None, **metadata: str) -> ChatRequest:
    messages = ([Message("system", system)] if system else []) + [Message("user", text)]
    return ChatRequest(model="help", messages=tuple(messages), user=user, metadata=metadata)


async def test_the_routes_prompt_becomes_the_system_prompt_and_is_recorded(stack: Stack) -> None:
    assert stack.prompts is not None
    stack.prompts.push("support", "You support {{ product }} for {{ tenant }}.", label="production")
    ex = await stack.chat(ask("hi", product="routers"))
    sent = fake(stack).requests[-1].messages
    assert [(m.role, m.text) for m in sent] == [("system", "You support routers for default."), ("user", "hi")]
    assert (ex.attributes[PROMPT_NAME_ATTR], ex.attributes[PROMPT_VERSION_ATTR], ex.attributes[PROMPT_LABEL_ATTR]) == (
        "support",
        1,
        "production",
    )
    stack.writer.flush(5)
    stored = stack.store.get_exchange(ex.id)
    assert stored is not None and stored.attributes[PROMPT_VERSION_ATTR] == 1
    assert stack.prompts.store.prompt_usage("support") == {1: 1}


async def test_a_client_system_prompt_follows_the_registered_one(stack: Stack) -> None:
    assert stack.prompts is not None
    stack.prompts.push("support", "Registered.", label="production")
    await stack.chat(ask("hi", system="Answer in French."))
    # (the canary guard adds its marker as a system message of its own, after the first)
    sent = [m for m in fake(stack).requests[-1].messages if not is_canary_line(m.text)]
    assert [m.role for m in sent] == ["system", "user"]
    assert sent[0].text == "Registered.\n\nAnswer in French."


async def test_moving_the_label_changes_the_prompt_without_a_restart(stack: Stack) -> None:
    assert stack.prompts is not None
    stack.prompts.push("support", "Version one.", label="production")
    stack.prompts.push("support", "Version two.")
    await stack.chat(ask("a"))
    stack.prompts.store.set_label("support", "production", 2, at=0.0)  # straight in the store, like the CLI
    ex = await stack.chat(ask("b"))
    assert [r.messages[0].text for r in fake(stack).requests] == ["Version one.", "Version two."]
    assert ex.attributes[PROMPT_VERSION_ATTR] == 2


async def test_a_missing_variable_is_the_clients_error(stack: Stack) -> None:
    assert stack.prompts is not None
    stack.prompts.push("support", "About {{ product }}.", label="production")
    with pytest.raises(TemplateError, match="product") as err:
        await stack.chat(ask("hi"))
    assert err.value.http_status == 400
    assert fake(stack).requests == []


async def test_a_missing_label_is_the_operators_error(stack: Stack) -> None:
    with pytest.raises(PromptUnavailable, match=r"Route 'help'.*no prompt named 'support'") as err:
        await stack.chat(ask("hi"))
    assert err.value.http_status == 500 and "aiestack prompts push support" in (err.value.hint or "")


async def test_bare_models_and_routes_without_a_prompt_are_untouched(stack: Stack) -> None:
    await stack.chat(ChatRequest(model="fake", messages=(Message("user", "plain"),)))
    assert [(m.role, m.text) for m in fake(stack).requests[-1].messages] == [("user", "plain")]


async def test_ab_split_is_stable_per_user_and_split_by_weight(tmp_path: Path) -> None:
    stack = build_stack(
        _settings(tmp_path, "support@production:50, support@canary:50"), store=MemoryExchangeStore()
    )
    try:
        assert stack.prompts is not None
        stack.prompts.push("support", "Arm A.", label="production")
        stack.prompts.push("support", "Arm B.", label="canary")
        arms: dict[str, set[int]] = collections.defaultdict(set)
        for round_ in range(3):
            for i in range(20):
                ex = await stack.chat(ask(f"q{round_}", user=f"user-{i}"))
                arms[f"user-{i}"].add(ex.attributes[PROMPT_VERSION_ATTR])
        assert all(len(versions) == 1 for versions in arms.values())  # each user stays on one arm
        assert {v for versions in arms.values() for v in versions} == {1, 2}  # both arms get traffic
    finally:
        await stack.aclose()


async def test_cached_answers_never_cross_ab_arms(tmp_path: Path) -> None:
    stack = build_stack(
        _settings(tmp_path, "support@production:50, support@canary:50"), store=MemoryExchangeStore()
    )
    try:
        assert stack.prompts is not None
        stack.prompts.push("support", "Arm A.", label="production")
        stack.prompts.push("support", "Arm B.", label="canary")
        versions: dict[str, int] = {}
        for _ in range(2):
            for i in range(20):  # deterministic requests: the exact cache serves repeats
                request = dataclasses.replace(ask("the same question", user=f"user-{i}"), params=Params(temperature=0))
                ex = await stack.chat(request)
                # every exchange, a cache hit too, records the version its answer was made with
                assert versions.setdefault(f"user-{i}", ex.attributes[PROMPT_VERSION_ATTR]) == ex.attributes[PROMPT_VERSION_ATTR]
        assert set(versions.values()) == {1, 2}
        calls = fake(stack).requests
        systems = sorted(m.text for r in calls for m in r.messages if m.role == "system")
        assert len(calls) == 2  # one answer per arm; every other user got their own arm's answer from the cache
        assert "Arm A." in systems[0] and "Arm B." in systems[1]
    finally:
        await stack.aclose()


def test_a_malformed_route_prompt_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_stack(_settings(tmp_path, "support@production:-1"), store=MemoryExchangeStore())
    assert err.value.key == "routes.help.prompt"


async def test_an_exchange_that_fails_after_the_prompt_stage_records_its_prompt_version(stack: Stack) -> None:
    from aiestack.errors import ProviderUnavailable
    from aiestack.models.fake import Script

    assert stack.prompts is not None
    stack.prompts.push("support", "You support {{ product }}.", label="production")
    fake(stack).enqueue([Script(error=ProviderUnavailable("down", provider="fake"))] * 5)
    with pytest.raises(ProviderUnavailable):
        await stack.chat(ask("hi", product="routers"))
    stack.writer.flush(5)
    (stored,) = [e for e in stack.store.list_exchanges(limit=5)]
    assert stored.outcome == "error" and stored.attributes[PROMPT_VERSION_ATTR] == 1
