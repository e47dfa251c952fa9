from __future__ import annotations

import pytest

from aiestack.errors import ConfigError
from aiestack.evals.metrics import build_metric
from aiestack.evals.metrics.structured import final_number, strip_fences

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 3 + 4 = 7 dollars.\n#### 7", 7.0),
        ("#### 1,234", 1234.0),
        ("The total is $1,234.50.", 1234.5),
        ("It dropped to -12 degrees, then 5", 5.0),
        ("Loss: -$3.25", -3.25),
        ("About 50% of them", 50.0),
        ("0.5 then .25", 0.25),
        ("She came 5th", None),
        ("no number at all", None),
        ("x-5", 5.0),
    ],
)
def test_final_number(text: str, expected: float | None) -> None:
    assert final_number(text) == expected


async def test_numeric_match_with_gsm8k_reference(make_sample) -> None:
    metric = build_metric("numeric_match", {})
    reference = "Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18"
    right = await metric.score(make_sample("So she makes $18.00 every day.", reference))
    assert right.value == 1.0 and right.detail["predicted"] == 18.0
    wrong = await metric.score(make_sample("The answer is 16", reference))
    assert wrong.value == 0.0
    none = await metric.score(make_sample("I don't know", reference))
    assert none.value == 0.0 and none.detail["reason"] == "no number in the output"
    assert (await metric.score(make_sample("3", None))).value is None


async def test_numeric_tolerance(make_sample) -> None:
    loose = build_metric("numeric_match", {"rel_tol": 0.01})
    assert (await loose.score(make_sample("3.14", "3.1416"))).value == 1.0
    assert (await build_metric("numeric_match", {}).score(make_sample("3.14", "3.1416"))).value == 0.0


def test_strip_fences() -> None:
    assert strip_fences('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_fences("  plain ") == "plain"


async def test_json_validity(make_sample) -> None:
    metric = build_metric("json_valid", {})
    assert (await metric.score(make_sample('```json\n{"ok": true}\n```'))).value == 1.0
    bad = await metric.score(make_sample("{ok: true}"))
    assert bad.value == 0.0 and "not JSON" in bad.detail["reason"]


async def test_json_schema_inline_and_per_example(make_sample) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    inline = build_metric("json_schema", {"schema": schema})
    assert (await inline.score(make_sample('{"age": 3}'))).value == 1.0
    wrong = await inline.score(make_sample('{"age": "three"}'))
    assert wrong.value == 0.0 and wrong.detail["reason"].startswith("at age:")
    per_example = build_metric("json_schema", {"schema_key": "schema"})
    assert (await per_example.score(make_sample("{}", metadata={"schema": schema}))).value == 0.0
    assert (await per_example.score(make_sample("{}"))).value is None


def test_invalid_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.json_schema\.schema"):
        build_metric("json_schema", {"schema": {"type": "no-such-type"}})
