"""Scoring an agent run (book ch. 6, agent failure modes): task success, tool-call accuracy, invalid
tool calls, steps, cost and time, read from a :class:`~aiestack.agents.events.RunResult`.

- ``success``: the run ended with a final answer and, when an expected answer is given, the answer
  matches it (the final number when the expected answer is a number, else SQuAD-normalised text
  containment);
- ``tool_call_accuracy``: the tool calls the run made, across its steps, are exactly the expected
  ones (BFCL's AST rules, any order; :mod:`aiestack.evals.bfcl.checker`);
- ``invalid_tool_calls``: calls whose arguments were not JSON, not an object or failed the tool's
  validation, plus a call of an unknown tool (which stops the run);
- ``steps``, ``cost_usd``, ``duration_ms``: from the run's stop event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiestack.agents.events import RunResult, ToolCalled, ToolResult
from aiestack.answers import final_number, normalize_answer
from aiestack.evals.bfcl.checker import check
from aiestack.evals.metrics.tools import declared_functions, expected_calls, function_docs

_INVALID = ("arguments are not valid JSON", "arguments must be a JSON object", "invalid arguments for")


def _answer_ok(answer: str | None, expected: Any) -> bool:
    if answer is None:
        return False
    number = final_number(str(expected)) if isinstance(expected, (int, float, str)) else None
    if isinstance(expected, (int, float)) or (number is not None and normalize_answer(str(expected)) == normalize_answer(f"{number:g}")):
        return final_number(answer) == number
    return normalize_answer(str(expected)) in normalize_answer(answer)


def score_run(
    result: RunResult,
    *,
    expected_answer: Any = None,
    expected_tool_calls: Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, float | None]:
    """The run's scores; a score that does not apply (nothing expected) is None, never a made-up 0."""
    called = [e for e in result.events if isinstance(e, ToolCalled)]
    invalid = sum(1 for e in result.events if isinstance(e, ToolResult) and e.error and e.error.startswith(_INVALID))
    invalid += result.stop_reason == "unknown_tool"
    finished = result.stop_reason == "final_answer"
    success = float(finished and (expected_answer is None or _answer_ok(result.answer, expected_answer)))
    accuracy: float | None = None
    if expected_tool_calls is not None:
        answers = expected_calls(list(expected_tool_calls)) or []
        calls = []
        for e in called:
            try:
                args = json.loads(e.arguments or "{}")
            except json.JSONDecodeError:
                args = None
            calls.append({e.name: args if isinstance(args, dict) else {"__unreadable__": e.arguments}})
        functions = function_docs(tools) or declared_functions(answers)
        accuracy = float(check("parallel", functions, calls, answers).valid)
    stopped = result.stopped
    return {
        "success": success,
        "tool_call_accuracy": accuracy,
        "invalid_tool_calls": float(invalid),
        "steps": float(stopped.steps),
        "cost_usd": stopped.cost_usd,
        "duration_ms": stopped.duration_ms,
    }
