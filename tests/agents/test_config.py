"""[agents.NAME]: validated at build (ConfigError naming the key), built into agents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiestack.agents.config import agent_specs, make_agent
from aiestack.errors import ConfigError

from .conftest import make_stack

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"tools": ["shell"]}, "agents.a.tools", "unknown tool 'shell'"),
        ({"tools": ["search"]}, "agents.a.collection", "needs a collection"),
        ({"tools": ["calculator"], "approval": ["python"]}, "agents.a.approval", "python is not one of"),
        ({"max_steps": 0}, "agents.a.max_steps", "greater than or equal to 1"),
        ({"model": "nope"}, "agents.a.model", "'nope' is not a configured model"),
        ({"instructoins": "x"}, "agents.a.instructoins", "did you mean 'instructions'"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_specs({"a": table}, known_models=frozenset({"m"}))
    assert caught.value.key == key and words in str(caught.value) + (caught.value.hint or "")


def test_the_stack_refuses_a_bad_agent_at_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents\.helper\.model"):
        make_stack(tmp_path, agents={"helper": {"model": "gpt-nope"}})


async def test_an_agent_is_built_from_its_table(tmp_path: Path) -> None:
    stack, _, _ = make_stack(tmp_path, agents={
        "helper": {"instructions": "Be brief.", "tools": ["calculator", "python"], "approval": ["python"], "max_steps": 3},
    })  # fmt: skip
    try:
        agent = make_agent(stack, "helper")
        assert agent.model == "m" and agent.name == "helper" and agent.max_steps == 3
        assert [(t.name, t.approval) for t in agent.toolset] == [("calculator", False), ("python", True)]
        from aiestack.agents import calculator

        assert not calculator.approval  # the shared built-in is not changed
        with pytest.raises(KeyError, match="agents: helper"):
            make_agent(stack, "other")
    finally:
        await stack.aclose()


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"planning": {"max_replans": -1}}, "agents.a.planning.max_replans", "greater than or equal to 0"),
        ({"reflection": {"rounds": 2}}, "agents.a.reflection.rounds", "unknown"),
        ({"memory": True}, "agents.a.memory", "max_context_tokens"),
        ({"memory": {"keep_last": 3}}, "agents.a.memory.max_context_tokens", "required"),
        ({"reflection": {"model": "critic-nope"}}, "agents.a.reflection.model", "'critic-nope' is not a configured"),
        ({"long_term_memory": {"collection": "a b"}}, "agents.a.long_term_memory.collection", "pattern"),
    ],
)
def test_bad_pattern_tables_name_the_key(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_specs({"a": table}, known_models=frozenset({"m"}))
    assert caught.value.key == key and words in str(caught.value) + (caught.value.hint or "")


async def test_an_agent_gets_the_patterns_its_table_turns_on(tmp_path: Path) -> None:
    stack, _, _ = make_stack(tmp_path, agents={
        "planner": {"planning": True, "reflection": {"max_rounds": 1, "model": "t"},
                    "memory": {"max_context_tokens": 3000, "keep_last": 4},
                    "long_term_memory": {"collection": "notes", "recall_k": 2, "tools": False}},
        "plain": {"planning": False},
    })  # fmt: skip
    try:
        agent = make_agent(stack, "planner")
        patterns = agent.patterns
        assert patterns.planning is not None and patterns.planning.max_replans == 2
        assert patterns.reflection is not None and patterns.reflection.max_rounds == 1 and patterns.reflection.model == "t"
        assert patterns.memory is not None and patterns.memory.max_context_tokens == 3000 and patterns.memory.keep_last == 4
        long_term = patterns.long_term
        assert long_term is not None and long_term.collection_for("acme") == "notes--acme" and long_term.recall_k == 2
        assert [t.name for t in agent.toolset] == []  # tools = false: recall before runs only
        assert not make_agent(stack, "plain").patterns.active
    finally:
        await stack.aclose()


def test_the_docs_agent_tables_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every [agents.NAME] example of docs/agents.md passes the checks the stack makes at build
    (the helper example once named an approval tool it did not have). The MCP servers' programs
    and folders are the reader's, so those two checks are left out here."""
    import re
    import tomllib

    import aiestack.agents.mcp_agents as mcp_agents

    monkeypatch.setattr(mcp_agents, "_check_command", lambda where, command, cwd: None)
    monkeypatch.setattr(mcp_agents.os.path, "isdir", lambda path: True)
    doc = (Path(__file__).parents[2] / "docs" / "agents.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", doc, flags=re.S) if "[agents." in b]
    assert len(blocks) >= 3
    for block in blocks:
        agent_specs(tomllib.loads(block)["agents"], known_models=frozenset({"gpt-4o-mini"}))
