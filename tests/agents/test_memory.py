"""Short-term memory (window + summary at the token budget) and long-term memory (facts per tenant)."""

from __future__ import annotations

import json

import pytest

from aiestack.agents import Agent, LongTermMemory, MemoryRecalled, ShortTermMemory, Summarised, tool
from aiestack.agents.patterns import AGENT_PURPOSE
from aiestack.build import Stack
from aiestack.models.fake import FakeModel, Script
from aiestack.testing.embeddings import BagOfWordsEmbeddings

from .conftest import TextOnlyModel

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]


@tool
def page(n: int) -> str:
    """Read page n of the report."""
    return f"Page {n} says: " + ("filler words about the quarterly report " * 20) + f"and the key number is {n * 11}."


def calls(*specs: tuple[str, str, dict[str, object]]) -> Script:
    return Script(tool_calls=[(cid, name, json.dumps(args)) for cid, name, args in specs])


async def test_summarisation_triggers_at_the_budget_and_keeps_the_run_correct(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    memory = ShortTermMemory(max_context_tokens=400, keep_last=2)
    agent = Agent(model="m", stack=stack, tools=[page], memory=memory, instructions="Read the report.")
    model.enqueue([
        calls(("c1", "page", {"n": 1})),
        calls(("c2", "page", {"n": 2})),  # the conversation is now over 400 tokens
        "Pages 1 and 2 were read; the key numbers are 11 and 22.",  # the summary
        calls(("c3", "page", {"n": 3})),  # over again: the summary itself is folded into the next one
        "Pages 1 to 2 were read (key numbers 11 and 22), and page 2 was summarised.",
        "The key numbers are 11, 22 and 33.",
    ])  # fmt: skip
    result = await agent.run("Read pages 1 to 3 and list the key numbers.")
    assert result.answer == "The key numbers are 11, 22 and 33." and result.stop_reason == "final_answer"
    summaries = [e for e in result.events if isinstance(e, Summarised)]
    assert len(summaries) == 2 and result.steps == 6
    assert "Summary of the earlier conversation:\nPages 1 and 2" in model.requests[4].messages[-1].text
    first = summaries[0]
    assert first.tokens_before > 400 and first.tokens_after < first.tokens_before and first.messages >= 2
    assert first.exchange_id and first.summary.startswith("Pages 1 and 2")
    # The summariser saw the folded turns (a tool result among them), not the window.
    summarise_request = model.requests[2]
    assert "result of page: Page 1 says" in summarise_request.messages[-1].text
    # The next step's conversation: instructions, task, the summary, then the window, whole.
    after = model.requests[3].messages
    texts = [m.text for m in after]
    users = [m.text for m in after if m.role == "user"]
    assert texts[0] == "Read the report." and users[0].startswith("Read pages 1 to 3")
    assert users[1].startswith("Summary of the earlier conversation:")
    assert not any("Page 1 says" in t for t in texts)  # folded away
    for i, m in enumerate(after):  # every tool result follows the assistant message that called it
        if m.role == "tool":
            caller = next(p for p in reversed(after[:i]) if p.role == "assistant")
            assert m.tool_call_id in {c.id for c in caller.tool_calls}
    stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(first.exchange_id)
    assert record is not None and record.attributes[AGENT_PURPOSE] == "summary"


async def test_no_summary_under_the_budget_or_with_nothing_to_fold(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(("c1", "page", {"n": 1})), "11"])
    result = await Agent(model="m", stack=stack, tools=[page], memory=ShortTermMemory(max_context_tokens=100_000)).run("Read page 1.")
    assert not [e for e in result.events if isinstance(e, Summarised)] and result.steps == 2
    model.enqueue([calls(("c1", "page", {"n": 1})), "11"])
    tiny = ShortTermMemory(max_context_tokens=10, keep_last=5)  # the window holds everything after the task
    result = await Agent(model="m", stack=stack, tools=[page], memory=tiny).run("Read page 1.")
    assert result.answer == "11" and not [e for e in result.events if isinstance(e, Summarised)]


async def test_the_earlier_turns_of_a_conversation_are_summarised_and_the_task_kept(agent_stack: Fixture) -> None:
    from aiestack.types import Message

    stack, model, _ = agent_stack
    history = [Message("user", "Tell me about the report. " + "blah " * 300), Message("assistant", "It is long. " + "blah " * 300)]
    model.enqueue(["We talked about a long report.", "11"])
    agent = Agent(model="m", stack=stack, memory=ShortTermMemory(max_context_tokens=200, keep_last=2))
    result = await agent.run("What is the key number of page 1?", history=history)
    assert result.answer == "11" and [e.type for e in result.events].count("memory_summary") == 1
    users = [m.text for m in model.requests[1].messages if m.role == "user"]
    assert users[0] == "What is the key number of page 1?" and users[1].startswith("Summary of the earlier conversation:")
    assert not any("blah blah" in m.text for m in model.requests[1].messages)


@pytest.fixture
def memory(agent_stack: Fixture) -> LongTermMemory:
    stack, _, _ = agent_stack
    stack.resources.use(embeddings=BagOfWordsEmbeddings())
    return LongTermMemory(stack.resources, collection="facts")


async def test_facts_remembered_in_one_run_are_recalled_in_the_next(agent_stack: Fixture, memory: LongTermMemory) -> None:
    stack, model, _ = agent_stack
    agent = Agent(model="m", stack=stack, long_term_memory=memory)
    assert {t.name for t in agent.toolset} == {"remember", "recall"}
    model.enqueue([calls(("c1", "remember", {"fact": "Ana's favourite colour is green"})), "Noted."])
    first = await agent.run("Remember that Ana's favourite colour is green.", tenant="acme")
    assert first.tool_results[0].content == "Remembered."
    recalled = next(e for e in first.events if isinstance(e, MemoryRecalled))
    assert recalled.facts == ()  # nothing stored yet when the first run began

    model.enqueue(["Green."])
    second = await agent.run("What is Ana's favourite colour?", tenant="acme")
    recalled = next(e for e in second.events if isinstance(e, MemoryRecalled))
    assert recalled.facts == ("Ana's favourite colour is green",)
    shown = model.requests[-1].messages
    assert any("Facts remembered" in m.text and "green" in m.text for m in shown)

    model.enqueue([calls(("c1", "recall", {"query": "Ana colour"})), "Green."])
    third = await agent.run("Look up Ana's colour in your memory.", tenant="acme")
    assert "Ana's favourite colour is green" in third.tool_results[0].content
    assert await memory.remember("Ana's favourite colour is green", tenant="acme") is False  # stored once


async def test_memories_do_not_leak_across_tenants(agent_stack: Fixture, memory: LongTermMemory) -> None:
    stack, model, _ = agent_stack
    await memory.remember("The launch code word is bluebird", tenant="acme")
    agent = Agent(model="m", stack=stack, long_term_memory=memory)
    model.enqueue([calls(("c1", "recall", {"query": "launch code word"})), "I do not know."])
    other = await agent.run("What is the launch code word?", tenant="globex")
    recalled = next(e for e in other.events if isinstance(e, MemoryRecalled))
    assert recalled.facts == () and other.tool_results[0].content == "Nothing remembered about that."
    assert not any("bluebird" in m.text for r in model.requests[-2:] for m in r.messages)
    assert await memory.recall("launch code word", tenant="acme") == ["The launch code word is bluebird"]
    documents = stack.resources.documents
    acme = documents.get_collection(memory.collection_for("acme"))
    assert acme is not None and acme.tenant == "acme"
    assert documents.get_collection(memory.collection_for("globex")) is None
    # A collection of that name owned by someone else is refused, never read.
    documents.create_collection(memory.collection_for("initech"), tenant="acme", embedding_model="bag-of-words", dim=64)
    with pytest.raises(PermissionError, match="another tenant"):
        await memory.remember("x", tenant="initech")
    assert memory.collection_for("a b/c") != memory.collection_for("a-b-c")  # odd tenant ids are hashed


async def test_auto_recall_and_tools_can_each_be_switched_off(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    stack.resources.use(embeddings=BagOfWordsEmbeddings())
    quiet = LongTermMemory(stack.resources, auto_recall=False, tools_enabled=False)
    model.enqueue(["ok"])
    result = await Agent(model="m", stack=stack, long_term_memory=quiet).run("What is the capital of France?")
    assert not [e for e in result.events if isinstance(e, MemoryRecalled)] and not model.requests[-1].params.tools


def test_the_head_before_the_first_reply_is_never_folded() -> None:
    from aiestack.types import Message, ToolCall

    memory = ShortTermMemory(max_context_tokens=10, keep_last=2)
    call = ToolCall("c1", "page", "{}")
    messages = [
        Message("system", "rules"), Message("user", "task"), Message("user", "Facts remembered: x"),
        Message("user", "Plan: 1. read"), Message("assistant", "", tool_calls=(call,)),
        Message("tool", "page 1", tool_call_id="c1", name="page"), Message("assistant", "", tool_calls=(call,)),
        Message("tool", "page 1 again", tool_call_id="c1", name="page"),
        Message("assistant", "", tool_calls=(ToolCall("c2", "page", "{}"), ToolCall("c3", "page", "{}"))),
        Message("tool", "a", tool_call_id="c2", name="page"), Message("tool", "b", tool_call_id="c3", name="page"),
    ]  # fmt: skip
    # The window moved back to the message that made the two calls; no earlier turns before the task.
    assert memory.split(messages, "task") == (range(1, 1), range(4, 8))
    assert memory.split(messages[:6], "task") == (range(1, 1), range(4, 4))  # nothing between head and window
    history = [Message("user", "hi"), Message("assistant", "hello"), Message("user", "more"), Message("assistant", "ok")]
    chat = [messages[0], *history, *messages[1:]]
    assert memory.split(chat, "task") == (range(1, 5), range(8, 12))  # the earlier turns are folded too
