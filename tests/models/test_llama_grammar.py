"""JSON schema → GBNF: integer bounds become grammar rules that admit exactly the integers in range."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aiestack.errors import ProviderBadRequest
from aiestack.models.llama_grammar import JSON_CHAR, MAX_DIGITS, integer_bounds, integer_range, schema_to_gbnf

pytest.importorskip("llama_cpp.llama_grammar")

ROOT = Path(__file__).resolve().parents[2]
_TOKEN = re.compile(r'"[^"]*"|\[[^\]]*\]|[()|?]|\s+')


def as_regex(expression: str) -> re.Pattern[str]:
    """The GBNF subset integer_range writes (literals, classes, groups, |, ?) as a Python regex."""
    tokens = _TOKEN.findall(expression)
    assert "".join(tokens) == expression, f"unexpected syntax in {expression!r}"
    out = []
    for token in tokens:
        if token.startswith('"'):
            out.append(re.escape(token[1:-1]))
        elif not token.isspace():
            out.append(token)
    return re.compile("".join(out))


def json_integer(text: str) -> bool:
    """An integer as JSON writers write it: no leading zeros, no ``-0``."""
    return re.fullmatch(r"0|-?[1-9][0-9]*", text) is not None


@pytest.mark.parametrize(
    "low, high",
    [(0, 120), (-5, 5), (-120, -7), (15, 23), (0, 0), (-1, -1), (7, 7), (99, 1000), (100, 999),
     (101, 998), (-1000, 1234), (3, None), (None, -3), (None, 42), (-42, None), (None, None), (0, None)],
)
def test_a_range_admits_exactly_its_integers_as_json_writes_them(low: int | None, high: int | None) -> None:
    pattern = as_regex(integer_range(low, high))
    candidates = [str(n) for n in range(-1500, 1501)] + ["-0", "00", "007", "-07", "+5", "1e2", ""]
    for text in candidates:
        expected = json_integer(text) and (low is None or int(text) >= low) and (high is None or int(text) <= high)
        assert (pattern.fullmatch(text) is not None) == expected, (low, high, text)


def test_unbounded_sides_reach_the_libraries_digit_limit_and_no_further() -> None:
    pattern = as_regex(integer_range(0, None))
    assert pattern.fullmatch("9" * MAX_DIGITS) and pattern.fullmatch("1" + "0" * (MAX_DIGITS - 1))
    assert not pattern.fullmatch("1" + "0" * MAX_DIGITS)
    negative = as_regex(integer_range(None, -1))
    assert negative.fullmatch("-" + "9" * MAX_DIGITS) and not negative.fullmatch("-" + "9" * (MAX_DIGITS + 1))


def test_bounds_read_inclusive_exclusive_and_fractional_limits() -> None:
    assert integer_bounds({"type": "integer"}) is None
    assert integer_bounds({"type": "integer", "minimum": 0, "maximum": 120}) == (0, 120)
    assert integer_bounds({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}) == (1, 9)
    assert integer_bounds({"type": "integer", "minimum": 0.5, "maximum": 9.5}) == (1, 9)
    assert integer_bounds({"type": "integer", "exclusiveMinimum": 0.5, "exclusiveMaximum": 3.0}) == (1, 2)
    assert integer_bounds({"type": "integer", "minimum": 2, "exclusiveMinimum": 4}) == (5, None)
    assert integer_bounds({"type": "integer", "maximum": -3}) == (None, -3)
    # Draft-4 style booleans are not bounds by themselves (the guard's 2020-12 validator reads numbers).
    assert integer_bounds({"type": "integer", "exclusiveMinimum": True}) is None


def test_bounds_no_integer_satisfies_are_a_clear_error() -> None:
    with pytest.raises(ProviderBadRequest) as info:
        integer_bounds({"type": "integer", "minimum": 5, "maximum": 3})
    assert "minimum = 5" in info.value.message and info.value.hint
    with pytest.raises(ProviderBadRequest):
        integer_bounds({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2})


def test_the_readme_schema_bounds_its_age_and_keeps_the_rest_of_the_librarys_grammar_but_its_char() -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = json.loads((ROOT / "examples" / "person.json").read_text())
    grammar = schema_to_gbnf(schema)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    age = rules["age-kv"].rsplit(" ", 1)[1]
    assert rules[age] == f"({integer_range(0, 120)}) space"
    library = dict(line.split(" ::= ", 1) for line in json_schema_to_gbnf(json.dumps(schema)).splitlines())
    for name in ("root", "name-kv", "name", "city-kv", "city", "space"):
        assert rules[name] == library[name]
    assert rules["char"] == JSON_CHAR != library["char"]


def test_bounded_integers_inside_arrays_and_refs_are_bounded_too() -> None:
    schema = {
        "type": "object",
        "properties": {"scores": {"type": "array", "items": {"$ref": "#/$defs/score"}}},
        "required": ["scores"],
        "$defs": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    }
    assert integer_range(1, 5) in schema_to_gbnf(schema)
    unbounded = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert "integral-part" in schema_to_gbnf(unbounded)  # no bounds: the library's own rule


def test_a_string_character_is_what_json_allows_unescaped() -> None:
    grammar = schema_to_gbnf({"type": "object", "properties": {"a": {"type": "string"}}})
    (rule,) = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert rule == f"char ::= {JSON_CHAR}"
    # The character class written as a Python class: every character but '"', '\\' and U+0000-U+001F.
    unescaped = re.compile(JSON_CHAR.split(" | ")[0])
    assert [chr(c) for c in range(0x80) if unescaped.fullmatch(chr(c)) is None] == [
        *map(chr, range(0x20)), '"', "\\"
    ]
    assert unescaped.fullmatch("é") and unescaped.fullmatch("\x7f")
