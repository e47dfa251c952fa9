"""BFCL's AST matching of function calls against possible answers (Python categories).

A port of the rules of ``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` (BFCL v4, Apache-2.0,
Gorilla LLM) for the Python categories, so a score here means what it means on the leaderboard:

- a *call* is ``{name: {param: value}}``; a *possible answer* is ``{name: {param: [allowed values]}}``,
  where ``""`` among the allowed values marks an optional parameter that may be left out;
- the function name must match (``.`` is ``_`` on the wire: OpenAI-style tool names cannot hold dots,
  so both sides are compared with dots turned into underscores, as BFCL does for such models);
- every required parameter must be present, no unknown parameter may be, each value must have the
  declared type (an ``int`` passes for a ``float``; arrays and tuples are checked one level deep) and
  be among the allowed values: strings compared after BFCL's standardisation (case, spaces and
  ``,./-_*^`` ignored), lists element-wise the same way, dicts key by key;
- ``simple``: exactly one call; ``multiple``: one call, of the function the answer names;
  ``parallel`` / ``parallel_multiple``: as many calls as answers, matched in any order;
- ``irrelevance``: right when no call is made; ``relevance``: right when at least one is.

Everything here is pure and synchronous: :func:`check` returns a :class:`Check`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

#: BFCL's Python type of each declared parameter type.
PYTHON_TYPES: Mapping[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
    "number": float,  # JSON Schema names (tools offered in eval suites); BFCL's own data uses the names above
    "object": dict,
}
_NESTED = ("array", "tuple")
_STANDARDIZE = re.compile(r"[ ,./\-_*^]")

Call = Mapping[str, Mapping[str, Any]]  # {name: {param: value}}
Answer = Mapping[str, Mapping[str, Sequence[Any]]]  # {name: {param: [allowed values]}}


@dataclass(frozen=True, slots=True)
class Check:
    """Whether the calls are right; when not, BFCL's error type and a readable reason."""

    valid: bool
    error_type: str = ""
    error: str = ""


_OK = Check(True)


def wire_name(name: str) -> str:
    """A function name as an OpenAI-style tool name (``math.factorial`` → ``math_factorial``)."""
    return name.replace(".", "_")


def standardize(text: str) -> str:
    """BFCL's string standardisation: no spaces or ``,./-_*^``, lower case, ``'`` as ``"``."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _std(value: Any) -> Any:
    return standardize(value) if isinstance(value, str) else value


def check(category: str, functions: Sequence[Mapping[str, Any]], calls: Sequence[Call], answers: Sequence[Answer]) -> Check:
    """Score one entry of ``category`` (``simple_python``, ``live_multiple``, ``irrelevance``...)."""
    if "irrelevance" in category:
        return _OK if not _has_call(calls) else Check(False, "irrelevance_error:decoder_success", "a function was called")
    if "relevance" in category:
        return _OK if _has_call(calls) else Check(False, "relevance_error:decoder_failed", "no function was called")
    if len(calls) != len(answers):
        kind = "parallel" if "parallel" in category else "multiple" if "multiple" in category else "simple"
        return Check(False, f"{kind}_function_checker:wrong_count", f"{len(calls)} calls, {len(answers)} expected")
    if "parallel" in category:
        return _parallel(functions, calls, answers)
    expected = next(iter(answers[0]))
    description = _find(functions, expected) if "multiple" in category else functions[0]
    if description is None:
        return Check(False, "checker:no_description", f"no function {expected!r} is offered")
    return simple(description, calls[0], answers[0])


def _has_call(calls: Sequence[Call]) -> bool:
    return bool(calls) and not (len(calls) == 1 and len(calls[0]) == 0)


def _find(functions: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((f for f in functions if f["name"] == name), None)


def _parallel(functions: Sequence[Mapping[str, Any]], calls: Sequence[Call], answers: Sequence[Answer]) -> Check:
    matched: set[int] = set()
    for i, answer in enumerate(answers):
        description = _find(functions, next(iter(answer)))
        if description is None:
            return Check(False, "checker:no_description", f"no function {next(iter(answer))!r} is offered")
        last = _OK
        for j, call in enumerate(calls):
            if j in matched:
                continue
            last = simple(description, call, answer)
            if last.valid:
                matched.add(j)
                break
        else:
            return Check(
                False,
                "parallel_function_checker_no_order:cannot_find_match",
                f"no call matches expected call {i} ({last.error})",
            )
    return _OK


def simple(description: Mapping[str, Any], call: Call, answer: Answer) -> Check:
    """One call against one possible answer (BFCL's ``simple_function_checker``, Python rules)."""
    allowed_by_param = next(iter(answer.values()))
    name = wire_name(str(description["name"]))
    if name not in {wire_name(n) for n in call}:
        return Check(False, "simple_function_checker:wrong_func_name", f"function {name!r} not called")
    params = next(v for n, v in call.items() if wire_name(n) == name)
    declared = description["parameters"].get("properties", {})
    for param in description["parameters"].get("required", []):
        if param not in params:
            return Check(False, "simple_function_checker:missing_required", f"missing required parameter {param!r}")
    for param, value in params.items():
        if param not in declared or param not in allowed_by_param:
            return Check(False, "simple_function_checker:unexpected_param", f"unexpected parameter {param!r}")
        result = _check_value(param, value, declared[param], list(allowed_by_param[param]))
        if not result.valid:
            return result
    for param, allowed in allowed_by_param.items():
        if param not in params and "" not in allowed:
            return Check(False, "simple_function_checker:missing_optional", f"parameter {param!r} not given")
    return _OK


def _check_value(param: str, value: Any, declared: Mapping[str, Any], allowed: list[Any]) -> Check:
    kind = str(declared.get("type", "string"))
    expected = PYTHON_TYPES.get(kind, str)
    nested = PYTHON_TYPES.get(str(declared.get("items", {}).get("type")), str) if kind in _NESTED else None
    if kind == "tuple" and isinstance(value, tuple):
        value = list(value)
    if kind in ("float", "number") and type(value) is int:
        value = float(value)
    typed, variable = _type_check(param, value, allowed, kind, expected, nested)
    if not typed.valid:
        return typed
    if not variable:
        if expected is dict:
            return _dict_check(param, value, allowed)
        if expected is list and nested is dict:
            return _list_of_dicts_check(param, value, allowed)
        if expected is str:
            if standardize(value) not in [standardize(a) for a in allowed if isinstance(a, str)]:
                return Check(False, "value_error:string", f"{param}={value!r}, expected one of {allowed}")
            return _OK
        if expected is list:
            got = [_std(v) for v in value]
            options = [[_std(v) for v in a] for a in allowed if isinstance(a, list)]
            if got not in options:
                return Check(False, "value_error:list/tuple", f"{param}={value!r}, expected one of {allowed}")
            return _OK
    if value not in allowed:
        return Check(False, "value_error:others", f"{param}={value!r}, expected one of {allowed}")
    return _OK


def _answer_type(allowed: Sequence[Any]) -> type | None:
    return next((type(a) for a in allowed if a != ""), None)


def _type_check(
    param: str, value: Any, allowed: Sequence[Any], kind: str, expected: type, nested: type | None
) -> tuple[Check, bool]:
    """BFCL's ``type_checker``: whether the value's type is right, and whether it is a "variable"
    (the answer holds a value of another type than declared, e.g. a name where a number is declared)."""
    answer_type = _answer_type(allowed)
    variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if nested is None:
            return _OK, variable
        for option in allowed:
            if not isinstance(option, list) or all(
                _type_check(param, item, option, nested.__name__, nested, None)[0].valid for item in cast("list[Any]", value)
            ):
                return _OK, variable
    if answer_type is not None and type(value) is answer_type:
        return _OK, True
    if type(value) is expected:
        return Check(False, "type_error:nested", f"{param}: items of {value!r} are not {nested.__name__ if nested else '?'}"), False
    return Check(False, "type_error:simple", f"{param}: expected {kind}, got {type(value).__name__} {value!r}"), False


def _dict_check(param: str, value: Mapping[str, Any], allowed: Sequence[Any]) -> Check:
    last = Check(False, "dict_checker:unclear", f"{param}: no allowed value")
    for option in allowed:
        if option == "":
            continue
        last = _dict_matches(param, value, option)
        if last.valid:
            return _OK
    return last


def _dict_matches(param: str, value: Mapping[str, Any], option: Mapping[str, Any]) -> Check:
    for key, item in value.items():
        if key not in option:
            return Check(False, "value_error:dict_key", f"{param}: unexpected key {key!r}")
        if _std(item) not in [_std(a) for a in option[key]]:
            return Check(False, "value_error:dict_value", f"{param}.{key}={item!r}, expected one of {option[key]}")
    for key, allowed in option.items():
        if key not in value and "" not in allowed:
            return Check(False, "value_error:dict_key", f"{param}: missing key {key!r}")
    return _OK


def _list_of_dicts_check(param: str, value: Sequence[Mapping[str, Any]], allowed: Sequence[Any]) -> Check:
    last = Check(False, "list_dict_checker:unclear", f"{param}: no allowed value")
    for option in allowed:
        if not isinstance(option, list) or len(option) != len(value):
            last = Check(False, "value_error:list_dict_count", f"{param}: wrong number of dicts")
            continue
        results = [_dict_matches(param, v, o) for v, o in zip(value, option, strict=True)]
        bad = next((r for r in results if not r.valid), None)
        if bad is None:
            return _OK
        last = bad
    return last


def unanswerable(functions: Sequence[Mapping[str, Any]], answers: Sequence[Answer]) -> str | None:
    """Why no answer can pass this entry under BFCL's own rules, or None when one can.

    A handful of BFCL v4 entries contradict themselves: the function requires a parameter that the
    possible answer leaves out or allows no value for (an empty list; only ``""`` for a non-string),
    or the answer needs a parameter the function does not declare.
    Every model fails them; reports count them apart so a score can be read against what is reachable.
    """
    for answer in answers:
        for name, params in answer.items():
            description = _find(functions, name)
            if description is None:
                return f"the answer calls {name!r}, which is not offered"
            declared = description["parameters"].get("properties", {})
            required = description["parameters"].get("required", [])
            for param in required:
                if param not in params:
                    return f"{name} requires {param!r}, which the answer leaves out"
            for param, allowed in params.items():
                if not allowed:
                    return f"{name}.{param} allows no value"
                if param not in declared and "" not in allowed:
                    return f"the answer needs {name}.{param}, which the function does not declare"
                kind = declared.get(param, {}).get("type", "string")
                if param in required and all(a == "" for a in allowed) and kind not in ("string", "any"):
                    return f"{name}.{param} is a required {kind} whose only allowed value is empty"
    return None
