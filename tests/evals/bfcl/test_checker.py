"""BFCL's AST rules, case by case (no data needed)."""

from __future__ import annotations

import pytest

from aiestack.evals.bfcl.checker import check, standardize, unanswerable

pytestmark = pytest.mark.unit

AREA = {
    "name": "geometry.area",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string"},
            "sides": {"type": "array", "items": {"type": "integer"}},
            "style": {"type": "dict"},
        },
        "required": ["base", "height"],
    },
}
ANSWER = {"geometry.area": {"base": [10], "height": [5.0], "unit": ["square meters", ""], "sides": [[1, 2], ""], "style": [""]}}
OTHER = {"name": "volume", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}


def simple(args: dict, name: str = "geometry_area") -> bool:
    return check("simple_python", [AREA], [{name: args}], [ANSWER]).valid


def test_names_match_with_dots_as_underscores_and_ints_pass_for_floats() -> None:
    assert simple({"base": 10, "height": 5})
    assert simple({"base": 10, "height": 5.0}, name="geometry.area")
    assert not simple({"base": 10, "height": 5}, name="area")


def test_strings_are_compared_after_bfcl_standardisation() -> None:
    assert standardize("Square-Meters, ok") == "squaremetersok"
    assert simple({"base": 10, "height": 5.0, "unit": "Square Meters"})
    assert not simple({"base": 10, "height": 5.0, "unit": "feet"})


def test_types_required_unexpected_and_optional_parameters() -> None:
    assert not simple({"base": "10", "height": 5.0})  # a string for an integer
    assert not simple({"base": 10.0, "height": 5.0})  # a float is no integer
    assert not simple({"height": 5.0})  # a required parameter missing
    assert not simple({"base": 10, "height": 5.0, "colour": "red"})  # not declared
    assert simple({"base": 10, "height": 5.0, "sides": [1, 2]})
    assert not simple({"base": 10, "height": 5.0, "sides": [2, 1]})  # lists keep their order
    assert not simple({"base": 10, "height": 5.0, "sides": ["1", "2"]})  # items typed one level deep
    strict = {"geometry.area": {**ANSWER["geometry.area"], "unit": ["meters"]}}  # no "": not optional
    assert not check("simple_python", [AREA], [{"geometry_area": {"base": 10, "height": 5.0}}], [strict]).valid


def test_simple_wants_exactly_one_call_multiple_the_named_function() -> None:
    call = {"geometry_area": {"base": 10, "height": 5.0}}
    assert not check("simple_python", [AREA], [call, call], [ANSWER]).valid
    assert check("multiple", [OTHER, AREA], [call], [ANSWER]).valid
    assert not check("multiple", [OTHER, AREA], [{"volume": {"x": 1}}], [ANSWER]).valid


def test_parallel_calls_match_in_any_order_each_used_once() -> None:
    answers = [{"volume": {"x": [1]}}, {"volume": {"x": [2]}}]
    assert check("parallel", [OTHER], [{"volume": {"x": 2}}, {"volume": {"x": 1}}], answers).valid
    assert not check("parallel", [OTHER], [{"volume": {"x": 1}}, {"volume": {"x": 1}}], answers).valid
    assert not check("parallel_multiple", [OTHER], [{"volume": {"x": 1}}], answers).valid


def test_irrelevance_wants_no_call_relevance_any_call() -> None:
    assert check("irrelevance", [OTHER], [], []).valid
    assert check("live_irrelevance", [OTHER], [{}], []).valid  # an empty call is no call
    assert not check("irrelevance", [OTHER], [{"volume": {"x": 1}}], []).valid
    assert check("live_relevance", [OTHER], [{"volume": {}}], []).valid
    assert not check("live_relevance", [OTHER], [], []).valid


def test_dict_parameters_are_checked_key_by_key() -> None:
    answer = {"geometry.area": {**ANSWER["geometry.area"], "style": [{"colour": ["Red"], "width": [2, ""]}]}}
    ok = {"base": 10, "height": 5.0, "style": {"colour": "red"}}
    assert check("simple_python", [AREA], [{"geometry_area": ok}], [answer]).valid
    bad = {"base": 10, "height": 5.0, "style": {"colour": "red", "width": 3}}
    assert not check("simple_python", [AREA], [{"geometry_area": bad}], [answer]).valid


def test_entries_no_answer_can_pass_are_named() -> None:
    assert unanswerable([AREA], [ANSWER]) is None
    missing = {"geometry.area": {"height": [5.0]}}
    assert "requires 'base'" in (unanswerable([AREA], [missing]) or "")
    assert "allows no value" in (unanswerable([OTHER], [{"volume": {"x": []}}]) or "")
