"""JSON schema → GBNF for the embedded model: llama-cpp-python's converter, with integer bounds enforced.

llama-cpp-python's ``json_schema_to_gbnf`` turns a schema into the grammar that constrains sampling,
but it ignores ``minimum``, ``maximum``, ``exclusiveMinimum`` and ``exclusiveMaximum``: an
``"age": {"type": "integer", "minimum": 0, "maximum": 120}`` could be sampled as ``150`` or ``-3``,
and the answer would then fail the ``json_schema`` guard and cost a re-ask. Here an integer with
bounds becomes a grammar rule that admits exactly the integers in range, written as JSON writes them
(no leading zeros, no ``-0``): the range is split by the number of digits, and each same-length
range by its first differing digit, the textbook construction of a regular expression for a numeric
range. Everything else is the library's converter. Bounds on ``number`` and ``multipleOf`` are not
expressible this way and stay with the ``json_schema`` guard, which validates every answer anyway.

The converter's string character is also corrected: llama-cpp-python admits any character but ``"``
and ``\\`` inside a string (``[^"\\]``), so a raw newline or tab could be sampled there, which JSON
forbids (control characters must be escaped): the answer then fails to parse, and the re-ask costs a
whole generation. llama.cpp's own converter excludes them; here too (:data:`JSON_CHAR`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiestack.errors import ProviderBadRequest

#: Digits of an integer with no upper bound, as llama-cpp-python's own ``integral-part`` allows.
MAX_DIGITS = 16
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
#: A character of a JSON string: anything but ``"``, ``\\`` and the control characters U+0000-U+001F,
#: or an escape (RFC 8259, section 7).
JSON_CHAR = r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar for ``schema`` (raises what the library's converter raises on a schema it cannot read)."""
    from llama_cpp.llama_grammar import RESERVED_NAMES, BuiltinRule, SchemaConverter

    class Converter(SchemaConverter):
        def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
            if name == "char":
                rule = BuiltinRule(JSON_CHAR, [])
            return str(super()._add_primitive(name, rule))

        def visit(self, schema: dict[str, Any], name: str) -> str:
            bounds = integer_bounds(schema) if schema.get("type") == "integer" else None
            if bounds is None:
                return str(super().visit(schema, name))
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            return str(self._add_rule(rule_name, f"({integer_range(*bounds)}) space"))

    converter = Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(json.loads(json.dumps(dict(schema))), "stdin")
    converter.visit(resolved, "")
    return str(converter.format_grammar())


def integer_bounds(schema: Mapping[str, Any]) -> tuple[int | None, int | None] | None:
    """An integer schema's inclusive ``(lowest, highest)`` (None where unbounded), or None without bounds.

    Raises :class:`ProviderBadRequest` when no integer satisfies them."""
    if not any(_is_number(schema.get(key)) for key in _BOUNDS):
        return None
    lows = [math.ceil(schema["minimum"])] if _is_number(schema.get("minimum")) else []
    if _is_number(schema.get("exclusiveMinimum")):
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    highs = [math.floor(schema["maximum"])] if _is_number(schema.get("maximum")) else []
    if _is_number(schema.get("exclusiveMaximum")):
        highs.append(math.ceil(schema["exclusiveMaximum"]) - 1)
    low, high = max(lows, default=None), min(highs, default=None)
    if low is not None and high is not None and low > high:
        raise ProviderBadRequest(
            f"No integer satisfies the JSON schema's bounds {_shown(schema)}.",
            provider="llama_cpp",
            hint="Fix the schema: the lowest allowed value must not exceed the highest.",
        )
    return low, high


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF expression matching exactly the JSON integers from ``low`` to ``high`` (None: unbounded)."""
    parts = []
    if high is None or high >= 0:
        parts.append(_naturals(max(low, 0) if low is not None else 0, high))
    if low is None or low < 0:
        smallest = -high if high is not None and high < 0 else 1
        parts.append('"-" ' + _group(_naturals(smallest, -low if low is not None else None)))
    return " | ".join(parts)


def _naturals(low: int, high: int | None) -> str:
    """Non-negative integers ``low..high`` (``high`` None: up to :data:`MAX_DIGITS` digits)."""
    top = len(str(high)) if high is not None else MAX_DIGITS
    parts = []
    for length in range(len(str(low)), top + 1):
        first = max(low, 10 ** (length - 1) if length > 1 else 0)
        if high is None and length > len(str(low)) and first == 10 ** (length - 1):
            # Every longer number: a non-zero digit, then length - 1 to MAX_DIGITS - 1 more.
            parts.append("[1-9] " + _digits(length - 1, MAX_DIGITS - 1))
            break
        last = min(high, 10**length - 1) if high is not None else 10**length - 1
        if first <= last:
            parts.append(_same_length(str(first), str(last)))
    return " | ".join(parts)


def _same_length(low: str, high: str) -> str:
    """Digit strings of one length from ``low`` to ``high`` (``low <= high``, the same length)."""
    if low == high:
        return f'"{low}"'
    if low[0] == high[0]:
        return f'"{low[0]}" ' + _group(_same_length(low[1:], high[1:]))
    rest = len(low) - 1
    parts = []
    start, stop = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:  # low's first digit keeps only its tail's upper part
        parts.append(f'"{low[0]}" ' + _group(_same_length(low[1:], "9" * rest)))
        start += 1
    partial_top = high[1:] != "9" * rest
    if partial_top:
        stop -= 1
    if start <= stop:
        parts.append(" ".join([_digit_class(start, stop), *["[0-9]"] * rest]))
    if partial_top:
        parts.append(f'"{high[0]}" ' + _group(_same_length("0" * rest, high[1:])))
    return " | ".join(parts)


def _digits(least: int, most: int) -> str:
    """``least`` to ``most`` digits, written as nested optionals (GBNF without repetition counts)."""
    optional = ""
    for _ in range(most - least):
        optional = f"([0-9]{(' ' + optional) if optional else ''})?"
    return " ".join([*["[0-9]"] * least, *([optional] if optional else [])])


def _digit_class(start: int, stop: int) -> str:
    return f'"{start}"' if start == stop else f"[{start}-{stop}]"


def _group(expression: str) -> str:
    return f"({expression})" if " | " in expression else expression


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(schema: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} = {schema[key]}" for key in _BOUNDS if key in schema)
