"""Tool-call metrics: did the answer call the expected tools with the expected arguments?

The expected calls are the example's reference: a list of ``{"name": ..., "arguments": {...}}``
(each argument one allowed value) or BFCL's ``{name: {param: [allowed values]}}``; an empty list
expects no call. The tools offered are read from the example (``tools_key``, default ``tools``):
OpenAI tools (``{"type": "function", "function": {...}}``) or plain ``{name, description,
parameters}`` documents (BFCL's included). Matching follows BFCL's AST rules
(:mod:`aiestack.evals.bfcl.checker`), with the calls in any order.

For an agent system's sample (``sample.agent_run``) the calls are those the run made across all its
steps, scored by :func:`aiestack.evals.agent_scores.score_run`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from aiestack.evals.base import Sample, Score
from aiestack.evals.bfcl.checker import check, wire_name
from aiestack.evals.metrics.options import ReferenceOptions, lookup
from aiestack.types import Completion


class ToolOptions(ReferenceOptions):
    tools_key: str = "tools"


def function_docs(tools: Any) -> list[dict[str, Any]]:
    """``{name, description, parameters}`` of each tool given as OpenAI tools or plain documents."""
    out = []
    for tool in tools or ():
        if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
            tool = tool["function"]
        if isinstance(tool, Mapping) and "name" in tool:
            out.append({"name": str(tool["name"]), "description": tool.get("description", ""), "parameters": dict(tool.get("parameters") or {})})
    return out


def expected_calls(reference: Any) -> list[dict[str, dict[str, list[Any]]]] | None:
    """The reference as BFCL possible answers (None when it is not a list of calls)."""
    if isinstance(reference, str):
        try:
            reference = json.loads(reference)
        except json.JSONDecodeError:
            return None
    if not isinstance(reference, list):
        return None
    answers = []
    for call in reference:
        if not isinstance(call, Mapping):
            return None
        if "name" in call and isinstance(call.get("arguments", {}), Mapping):
            answers.append({str(call["name"]): {k: [v] for k, v in dict(call.get("arguments", {})).items()}})
        elif len(call) == 1:
            name, params = next(iter(call.items()))
            answers.append({str(name): {k: list(v) for k, v in dict(params).items()}})
        else:
            return None
    return answers


def declared_functions(answers: Sequence[Mapping[str, Mapping[str, list[Any]]]]) -> list[dict[str, Any]]:
    """Function documents made from the expected calls when the example offers none."""
    docs = []
    for answer in answers:
        for name, params in answer.items():
            properties = {p: {"type": _json_type(next((a for a in allowed if a != ""), ""))} for p, allowed in params.items()}
            required = [p for p, allowed in params.items() if "" not in allowed]
            docs.append({"name": name, "parameters": {"properties": properties, "required": required}})
    return docs


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "dict"
    return "string"


def _calls(completion: Completion | None) -> tuple[list[dict[str, Any]], int]:
    """The answer's calls as ``{name: arguments}`` and how many could not be read (arguments not a JSON object)."""
    calls, unreadable = [], 0
    for tc in completion.message.tool_calls if completion is not None else ():
        try:
            args = json.loads(tc.arguments or "{}")
        except json.JSONDecodeError:
            args = None
        if isinstance(args, dict):
            calls.append({tc.name: args})
        else:
            unreadable += 1
    return calls, unreadable


class ToolCallAccuracy:
    """1.0 when the answer makes exactly the expected calls (BFCL's rules, any order)."""

    higher_is_better = True

    def __init__(self, name: str, opts: ToolOptions) -> None:
        self.name = name
        self._opts = opts

    async def score(self, sample: Sample) -> Score:
        answers = expected_calls(lookup(sample, self._opts.reference_key))
        if answers is None:
            return Score(None, error="the reference is not a list of expected calls ({name, arguments} or BFCL's form)")
        if sample.agent_run is not None:
            from aiestack.evals.metrics.agent import run_scores

            reference = lookup(sample, self._opts.reference_key)
            calls_made = _names_called(sample)
            value = run_scores(sample, calls=reference, tools=lookup(sample, self._opts.tools_key))["tool_call_accuracy"]
            return Score(value, {} if value else {"called": calls_made})
        calls, unreadable = _calls(sample.completion)
        if unreadable:
            return Score(0.0, {"reason": f"{unreadable} call(s) with arguments that are not a JSON object"})
        functions = function_docs(lookup(sample, self._opts.tools_key)) or declared_functions(answers)
        by_wire = {wire_name(f["name"]): f for f in functions}
        functions = [{**by_wire.get(wire_name(n), {"name": n, "parameters": {}}), "name": n} for a in answers for n in a] or functions
        result = check("parallel", functions, calls, answers)
        return Score(float(result.valid), {} if result.valid else {"reason": result.error, "error_type": result.error_type})


class ToolSelection:
    """1.0 when the answer calls the expected functions (as a multiset), whatever the arguments."""

    higher_is_better = True

    def __init__(self, name: str, opts: ToolOptions) -> None:
        self.name = name
        self._opts = opts

    async def score(self, sample: Sample) -> Score:
        answers = expected_calls(lookup(sample, self._opts.reference_key))
        if answers is None:
            return Score(None, error="the reference is not a list of expected calls")
        expected = sorted(wire_name(n) for a in answers for n in a)
        made = sorted(wire_name(name) for name in _names_called(sample))
        return Score(float(made == expected), {} if made == expected else {"expected": expected, "called": made})


class InvalidToolCalls:
    """The number of calls naming no offered tool, or with arguments that are not a JSON object or break its schema."""

    higher_is_better = False

    def __init__(self, name: str, opts: ToolOptions) -> None:
        self.name = name
        self._opts = opts

    async def score(self, sample: Sample) -> Score:
        if sample.agent_run is not None:  # the loop validated each call against its tool
            from aiestack.evals.metrics.agent import run_scores

            return Score(run_scores(sample)["invalid_tool_calls"])
        offered = {wire_name(f["name"]): f for f in function_docs(lookup(sample, self._opts.tools_key))}
        problems = []
        for tc in sample.completion.message.tool_calls if sample.completion is not None else ():
            try:
                args = json.loads(tc.arguments or "{}")
            except json.JSONDecodeError:
                problems.append(f"{tc.name}: arguments are not JSON")
                continue
            if not isinstance(args, dict):
                problems.append(f"{tc.name}: arguments are not a JSON object")
                continue
            if not offered:
                continue
            tool = offered.get(wire_name(tc.name))
            if tool is None:
                problems.append(f"{tc.name}: no such tool")
                continue
            schema = tool["parameters"]
            if schema.get("type") == "object":  # JSON Schema (BFCL's "dict" documents are not checked here)
                error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(args))
                if error is not None:
                    problems.append(f"{tc.name}: {error.message}")
        return Score(float(len(problems)), {"problems": problems} if problems else {})


class ToolCallCount:
    """The number of tool calls the answer makes."""

    higher_is_better = False

    def __init__(self, name: str, opts: ToolOptions) -> None:
        self.name = name

    async def score(self, sample: Sample) -> Score:
        if sample.agent_run is None and sample.completion is None:
            return Score(None)
        return Score(float(len(_names_called(sample))))


def _names_called(sample: Sample) -> list[str]:
    """The tools called: by the answer, or by an agent run across its steps."""
    if sample.agent_run is not None:
        from aiestack.agents.events import ToolCalled

        return [e.name for e in sample.agent_run.events if isinstance(e, ToolCalled)]
    return [tc.name for tc in (sample.completion.message.tool_calls if sample.completion is not None else ())]
