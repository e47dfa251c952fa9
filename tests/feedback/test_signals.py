"""Implicit feedback in a real stack: regenerations, edited resends, early stops and complaints."""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path

import pytest

from aiestack.build import Stack, build_stack
from aiestack.feedback import complaint, conversation_keys
from aiestack.feedback import signals as signals_module
from aiestack.feedback.signals import CLIENT_ATTR
from aiestack.models.fake import FakeModel
from aiestack.settings import FeedbackSettings, Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.feedback import FeedbackRecord, TurnRecord
from aiestack.types import ChatRequest, Exchange, Message, Params

pytestmark = pytest.mark.unit


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Guardrails and caches off: an output guard that buffers the answer would hand a stream over
    # in one piece, and a cache could answer a regeneration (both are tested in their own wings).
    stack = build_stack(_settings(tmp_path, guards={"enabled": False}, cache={"enabled": False}), store=MemoryExchangeStore())
    yield stack
    await stack.aclose()


def fake(stack: Stack) -> FakeModel:
    provider = stack.models.resolve("fake").provider
    assert isinstance(provider, FakeModel)
    return provider


async def say(
    stack: Stack,
    *turns: tuple[str, str],
    tenant: str = "default",
    stream: bool = False,
    model: str = "fake",
    client: str | None = None,
    temperature: float | None = None,
) -> Exchange:
    request = ChatRequest(
        model=model,
        messages=tuple(Message(role, text) for role, text in turns),  # type: ignore[arg-type]
        stream=stream,
        params=Params(temperature=temperature),
    )
    attributes = {CLIENT_ATTR: client} if client is not None else {}
    return await stack.chat(request, tenant=tenant, attributes=attributes)


async def signals(stack: Stack) -> list[FeedbackRecord]:
    assert stack.signals is not None
    await stack.signals.drain()
    found: list[FeedbackRecord] = stack.store.list_feedback(source="implicit")  # type: ignore[attr-defined]
    return sorted(found, key=lambda f: f.created_at)


async def test_sending_the_same_conversation_again_is_a_regeneration(stack: Stack) -> None:
    fake(stack).enqueue(["4", "Four.", "It is 4."])  # a regeneration is a new answer
    first = await say(stack, ("system", "Be kind."), ("user", "What is 2+2?"))
    await signals(stack)
    second = await say(stack, ("system", "Be kind."), ("user", "What is 2+2?"))
    found = await signals(stack)
    assert [(f.exchange_id, f.kind, f.source, f.value, f.detail.get("by")) for f in found] == [
        (first.id, "regenerated", "implicit", 0.0, second.id)
    ]
    third = await say(stack, ("system", "Be kind."), ("user", "What is 2+2?"))
    found = await signals(stack)
    assert [(f.exchange_id, f.detail.get("by")) for f in found] == [(first.id, second.id), (second.id, third.id)]


async def test_the_same_messages_to_another_model_are_no_regeneration(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}, "other": {"provider": "fake"}},
        guards={"enabled": False},  # type: ignore[arg-type]
        cache={"enabled": False},  # type: ignore[arg-type]
    )
    stack = build_stack(settings, store=MemoryExchangeStore())
    try:
        fake(stack).enqueue(["4"])
        await say(stack, ("user", "What is 2+2?"))
        await signals(stack)
        await say(stack, ("user", "What is 2+2?"), model="other")
        assert await signals(stack) == []
    finally:
        await stack.aclose()


async def test_the_same_messages_from_another_client_are_no_regeneration(stack: Stack) -> None:
    fake(stack).enqueue(["4", "Four."])
    await say(stack, ("user", "What is 2+2?"), client="c1")
    await signals(stack)
    await say(stack, ("user", "What is 2+2?"), client="c2")
    assert await signals(stack) == []


async def test_the_same_answer_again_is_no_regeneration(stack: Stack) -> None:
    """A client that retries a request and gets the same answer did not ask for another one."""
    fake(stack).enqueue(["4", "4"])
    await say(stack, ("user", "What is 2+2?"))
    await signals(stack)
    await say(stack, ("user", "What is 2+2?"))
    assert await signals(stack) == []


async def test_an_answer_from_the_cache_is_never_a_regeneration(tmp_path: Path) -> None:
    stack = build_stack(_settings(tmp_path, guards={"enabled": False}), store=MemoryExchangeStore())
    try:
        fake(stack).enqueue(["4", "Four."])
        first = await say(stack, ("user", "What is 2+2?"), temperature=0)
        await signals(stack)
        again = await say(stack, ("user", "What is 2+2?"), temperature=0)
        assert first.outcome == "ok" and again.outcome == "cached"
        assert await signals(stack) == []
    finally:
        await stack.aclose()


async def test_resending_an_edited_last_message_is_an_edit(stack: Stack) -> None:
    fake(stack).enqueue(["Which report?"])
    await say(stack, ("user", "Summarise the report"))
    history = (("user", "Summarise the report"), ("assistant", "Which report?"))
    second = await say(stack, *history, ("user", "The Q3 one"))
    await signals(stack)
    await say(stack, *history, ("user", "The Q3 one, in two lines"))
    assert [(f.exchange_id, f.kind) for f in await signals(stack)] == [(second.id, "edited")]


async def test_a_different_first_message_is_a_new_conversation_not_an_edit(stack: Stack) -> None:
    await say(stack, ("system", "Be kind."), ("user", "Summarise the report"))
    await signals(stack)
    await say(stack, ("system", "Be kind."), ("user", "What is the weather like?"))
    assert await signals(stack) == []


async def test_a_follow_up_question_is_no_signal(stack: Stack) -> None:
    fake(stack).enqueue(["Paris."])
    await say(stack, ("user", "Capital of France?"))
    await signals(stack)
    await say(stack, ("user", "Capital of France?"), ("assistant", "Paris."), ("user", "And of Italy?"))
    assert await signals(stack) == []


async def test_a_thats_wrong_follow_up_is_a_complaint_about_the_answer_it_follows(stack: Stack) -> None:
    fake(stack).enqueue(["Lyon."])
    first = await say(stack, ("user", "Capital of France?"))
    await signals(stack)
    await say(stack, ("user", "Capital of France?"), ("assistant", "Lyon."), ("user", "Non, c'est faux !"))
    found = await signals(stack)
    assert [(f.exchange_id, f.kind, f.detail.get("phrase")) for f in found] == [(first.id, "complaint", "c'est faux")]


async def test_a_complaint_about_an_answer_aiestack_did_not_give_is_ignored(stack: Stack) -> None:
    fake(stack).enqueue(["Lyon."])
    await say(stack, ("user", "Capital of France?"))
    await signals(stack)
    await say(stack, ("user", "Capital of France?"), ("assistant", "Marseille."), ("user", "That's wrong"))
    assert await signals(stack) == []


async def test_a_complaint_phrase_as_a_first_message_is_no_signal(stack: Stack) -> None:
    # Nothing precedes it to complain about (the phrase search is skipped for first turns).
    await say(stack, ("user", "That's wrong"))
    assert await signals(stack) == []


async def test_conversations_of_other_tenants_never_match(stack: Stack) -> None:
    await say(stack, ("user", "Same question"), tenant="acme")
    await signals(stack)
    await say(stack, ("user", "Same question"), tenant="globex")
    assert await signals(stack) == []


async def test_a_stream_the_client_stops_early_is_recorded_on_that_exchange(stack: Stack) -> None:
    fake(stack).enqueue([["one ", "two ", "three ", "four"]])
    ex = await say(stack, ("user", "Count to four"), stream=True)
    assert ex.completion is not None and ex.completion.stream is not None
    stream = ex.completion.stream
    assert isinstance(stream, AsyncGenerator)
    first = await stream.__anext__()
    assert first.text == "one "
    await stream.aclose()  # what the server does when the client disconnects
    found = await signals(stack)
    assert [(f.exchange_id, f.kind) for f in found] == [(ex.id, "stopped_early")]


async def test_a_stream_read_to_its_end_is_no_signal_and_its_turn_is_remembered(stack: Stack) -> None:
    ex = await say(stack, ("user", "Count to four"), stream=True)
    assert ex.completion is not None and ex.completion.stream is not None
    text = "".join([d.text async for d in ex.completion.stream])
    assert text == "Count to four"
    assert await signals(stack) == []
    fake(stack).enqueue(["1, 2, 3, 4"])
    await say(stack, ("user", "Count to four"))
    assert [(f.exchange_id, f.kind) for f in await signals(stack)] == [(ex.id, "regenerated")]


async def test_turns_older_than_the_window_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signals_module, "PRUNE_EVERY", 3)
    store = MemoryExchangeStore()
    clock = [1_000_000.0]
    stage = signals_module.Signals(store, window_s=60, clock=lambda: clock[0])
    stack = build_stack(_settings(tmp_path, feedback=FeedbackSettings(implicit=False)), store=store, extra_stages=[stage])
    try:
        old = await say(stack, ("user", "first"))
        await stage.drain()
        clock[0] += 120  # the first turn is now outside the window
        await say(stack, ("user", "second"))
        await say(stack, ("user", "third"))  # the third observation prunes
        await stage.drain()
        keys = conversation_keys(
            (Message("user", "any first message"),), tenant="default", key_id=None, user=None, route="fake"
        )
        assert keys is not None  # every first message of this caller shares the empty-history conversation
        remaining = {t.exchange_id for t in store.find_turns(conversation=keys.conversation)}
        assert old.id not in remaining and len(remaining) == 2
    finally:
        await stack.aclose()


async def test_implicit_signals_can_be_switched_off(tmp_path: Path) -> None:
    stack = build_stack(_settings(tmp_path, feedback=FeedbackSettings(implicit=False)), store=MemoryExchangeStore())
    try:
        assert stack.signals is None and "signals" not in stack.pipeline.names
    finally:
        await stack.aclose()


def test_conversation_keys_depend_on_the_earlier_messages_and_who_asks() -> None:
    msgs = (Message("system", "s"), Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2"))
    keys = conversation_keys(msgs, tenant="t", key_id="k", user=None)
    assert keys is not None and keys.last_user == "q2"
    earlier = conversation_keys(msgs[:2], tenant="t", key_id="k", user=None)
    assert earlier is not None and keys.previous_turn == earlier.turn
    assert keys.conversation != earlier.conversation
    assert conversation_keys(msgs, tenant="t", key_id="other", user=None) != keys
    assert conversation_keys(msgs, tenant="t", key_id="k", user="u") != keys
    assert conversation_keys(msgs, tenant="t", key_id="k", user=None, route="other") != keys
    assert conversation_keys(msgs, tenant="t", key_id="k", user=None, client="c") != keys
    assert conversation_keys((Message("system", "only"),), tenant="t", key_id=None, user=None) is None


@pytest.mark.parametrize(
    "text",
    [
        "That's wrong.",
        "No, that’s wrong!",  # a curly apostrophe
        "that is incorrect",
        "Das ist falsch.",
        "c'est faux",
        "Eso está mal",
        "è sbagliato",
        "Isso está errado",
        "Dat klopt niet",
        "Это неверно",
        "不对",
        "違います",
    ],
)
def test_complaints_are_recognised_in_several_languages(text: str) -> None:
    assert complaint(text) is not None


@pytest.mark.parametrize(
    "text",
    ["Is that right?", "Thanks!", "Why is it incorrectly formatted?", "", "that's wrong " + "and here is a long new question " * 6],
)
def test_other_messages_are_not_complaints(text: str) -> None:
    assert complaint(text) is None


class _CountingStore(MemoryExchangeStore):
    """A memory store that counts the feedback-store calls the Signals stage makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {"find_turns": 0, "write_turns": 0, "write_feedback": 0}

    def find_turns(
        self,
        *,
        conversation: str | None = None,
        turn: str | None = None,
        since: float | None = None,
        limit: int = 10,
    ) -> list[TurnRecord]:
        self.calls["find_turns"] += 1
        return super().find_turns(conversation=conversation, turn=turn, since=since, limit=limit)

    def write_turns(self, turns: Sequence[TurnRecord]) -> None:
        self.calls["write_turns"] += 1
        super().write_turns(turns)

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        self.calls["write_feedback"] += 1
        super().write_feedback(records)


async def test_observations_are_matched_and_stored_in_batches_in_order(tmp_path: Path) -> None:
    store = _CountingStore()
    # A long flush interval and a large batch: nothing is handled before drain() asks for it.
    stage = signals_module.Signals(store, batch_size=1000, flush_interval_s=60)
    stack = build_stack(_settings(tmp_path, feedback=FeedbackSettings(implicit=False)), store=store, extra_stages=[stage])
    try:
        fake(stack).enqueue([f"Answer {i}." for i in range(5)])  # each resend gets a new answer
        asked = [await say(stack, ("user", "Same question")) for _ in range(5)]
        fake(stack).enqueue(["Lyon."])
        lyon = await say(stack, ("user", "Capital of France?"))
        await say(stack, ("user", "Capital of France?"), ("assistant", "Lyon."), ("user", "That's wrong"))
        assert stage.pending == 7 and store.calls == {"find_turns": 0, "write_turns": 0, "write_feedback": 0}
        await stage.drain()
        assert stage.pending == 0
        # One batch: one query per distinct conversation (two) and per complaint, one write of each kind.
        assert store.calls == {"find_turns": 3, "write_turns": 1, "write_feedback": 1}
        found = sorted(store.list_feedback(source="implicit"), key=lambda f: (f.kind, f.created_at))
        # Each resend regenerates the one before it, though all five were matched in the same batch.
        regenerated = [(f.exchange_id, f.detail["by"]) for f in found if f.kind == "regenerated"]
        assert regenerated == [(a.id, b.id) for a, b in itertools.pairwise(asked)]
        assert [(f.exchange_id, f.kind) for f in found if f.kind != "regenerated"] == [(lyon.id, "complaint")]
        new_conversation = conversation_keys(
            (Message("user", "any"),), tenant="default", key_id=None, user=None, route="fake"
        )
        assert new_conversation is not None
        stored = {t.exchange_id for t in store.find_turns(conversation=new_conversation.conversation)}
        assert stored == {a.id for a in asked} | {lyon.id}
    finally:
        await stack.aclose()


async def test_closing_stores_what_is_still_queued_and_later_answers_are_handled_at_once(tmp_path: Path) -> None:
    store = MemoryExchangeStore()
    stage = signals_module.Signals(store, batch_size=1000, flush_interval_s=60)
    stack = build_stack(_settings(tmp_path, feedback=FeedbackSettings(implicit=False)), store=store, extra_stages=[stage])
    fake(stack).enqueue(["One.", "Two."])
    first = await say(stack, ("user", "Again"))
    second = await say(stack, ("user", "Again"))
    assert stage.pending == 2
    await stack.aclose()  # closes the stage too: what was queued is stored before it returns
    assert stage.pending == 0
    assert [(f.exchange_id, f.detail["by"]) for f in store.list_feedback(source="implicit")] == [(first.id, second.id)]
    # An answer that ends after the close (a stream read late) is handled on the spot.
    third = Exchange(request=second.request)
    stage._schedule(signals_module._Observation(third, third, "late", third.started_at))
    found = {(f.exchange_id, f.detail["by"]) for f in store.list_feedback(source="implicit")}
    assert found == {(first.id, second.id), (second.id, third.id)}


async def test_a_full_queue_drops_the_oldest_observations() -> None:
    store = MemoryExchangeStore()
    stage = signals_module.Signals(store, batch_size=1000, flush_interval_s=60, max_queue=3)
    request = ChatRequest(model="fake", messages=(Message("user", "q"),))
    exchanges = [Exchange(request=request) for _ in range(5)]
    for ex in exchanges:
        stage._schedule(signals_module._Observation(ex, ex, "a", 1_000_000.0))
    assert stage.pending == 3 and stage._queue.dropped == 2
    await stage.aclose()
    keys = conversation_keys(request.messages, tenant="default", key_id=None, user=None, route="fake")
    assert keys is not None
    assert {t.exchange_id for t in store.find_turns(conversation=keys.conversation)} == {ex.id for ex in exchanges[2:]}
