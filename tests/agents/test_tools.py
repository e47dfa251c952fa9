"""Tools from typed functions: schema derivation, validation fed back, timeouts, truncation."""

from __future__ import annotations

import asyncio
import json

import pytest

from aiestack.agents import Toolset, tool


@tool
def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


@tool(timeout_s=0.05, max_result_chars=10)
async def slow(text: str) -> str:
    """Wait forever unless the text is short."""
    if len(text) > 3:
        await asyncio.Event().wait()
    return text * 10


def test_schema_from_signature_and_docstring() -> None:
    assert add.description == "Add two integers."
    props = add.parameters["properties"]
    assert props["a"] == {"type": "integer", "description": "the first number"}
    assert props["b"]["default"] == 2 and props["b"]["type"] == "integer"
    assert add.parameters["required"] == ["a"]
    assert add.spec.name == "add"


async def test_sync_tool_runs_and_bad_arguments_come_back_as_errors() -> None:
    assert (await add.call('{"a": 1}')).content == "3"
    bad = await add.call('{"a": "x"}')
    assert not bad.ok and "a:" in bad.content and "integer" in bad.content
    malformed = await add.call('{"a": 1')
    assert not malformed.ok and "not valid JSON" in malformed.content
    extra = await add.call(json.dumps({"a": 1, "c": 3}))
    assert not extra.ok and "c:" in extra.content
    assert not (await add.call("[1]")).ok


async def test_async_tool_timeout_and_truncation() -> None:
    timed_out = await slow.call({"text": "long text"})
    assert timed_out.error is not None and "timed out" in timed_out.error
    cut = await slow.call({"text": "abc"})
    assert cut.ok and cut.truncated and cut.content.startswith("abcabcabca")
    assert "[truncated: 20 more characters]" in cut.content


async def test_raising_tool_is_an_error_outcome() -> None:
    @tool
    def boom() -> None:
        raise RuntimeError("disk full")

    out = await boom.call("")
    assert out.error == "boom raised RuntimeError: disk full"


def test_toolset_groups_and_rejects_duplicate_names() -> None:
    ts = Toolset([add, Toolset([slow])])
    assert [t.name for t in ts] == ["add", "slow"] and ts.get("add") is add
    assert len(ts.specs) == 2
    with pytest.raises(ValueError, match="two tools"):
        Toolset([add, add])


def test_approval_flag_is_carried() -> None:
    @tool(approval=True)
    def delete(path: str) -> str:
        """Delete a file."""
        return path

    assert delete.approval and not add.approval


async def test_calculator_evaluates_and_refuses_code() -> None:
    from aiestack.agents import calculator

    assert (await calculator.call({"expression": "(3 + 4) * 2 ** 3"})).content == "56"
    assert (await calculator.call({"expression": "sqrt(16) + -1"})).content == "3.0"
    for bad in ("__import__('os')", "2 ** 100000", "1 +", "x.y"):
        out = await calculator.call({"expression": bad})
        assert not out.ok, bad
    zero = await calculator.call({"expression": "1/0"})
    assert zero.error is not None and "ZeroDivisionError" in zero.error
