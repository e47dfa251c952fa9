"""The SQLite writers' JSON text (``stores/sql/plain.json_text``): read back as ``json.dumps`` wrote it."""

from __future__ import annotations

import json
import math
from types import MappingProxyType

import pytest

from aiestack.stores.sql.plain import json_text, plain


@pytest.mark.parametrize(
    "value",
    [
        None,
        "plain text",
        "naïve ☃ — 日本語 \u2028 \"quoted\" \\ back",
        [1, 2.5, True, None, "x"],
        (1, (2, 3)),
        {"messages": [{"role": "user", "content": "hi"}], "n": 3, "nested": {"a": [1, {"b": None}]}},
        {1: "int key", 2.5: "float key", False: "bool key"},
        MappingProxyType({"outer": MappingProxyType({"inner": (1, 2)})}),
        {"big": 2**70},  # past 64 bits: orjson refuses, json.dumps takes it
        {"small": -(2**63), "float": 1e-300, "third": 1 / 3},
    ],
)
def test_the_text_reads_back_as_json_dumps_text_did(value: object) -> None:
    def nested_plain(v: object) -> object:  # json.dumps takes only dicts, at every depth
        if isinstance(v, MappingProxyType | dict):
            return {k: nested_plain(x) for k, x in v.items()}
        return v

    assert json.loads(json_text(value)) == json.loads(json.dumps(nested_plain(plain(value))))


def test_non_ascii_is_kept_as_utf8_text() -> None:
    assert json_text({"city": "Zürich"}) == '{"city":"Zürich"}'


def test_nan_and_infinity_become_null_which_is_json() -> None:
    assert json.loads(json_text({"x": math.nan, "y": math.inf})) == {"x": None, "y": None}


def test_what_neither_serialiser_takes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        json_text({"s": {1, 2}})
