"""Suite YAML validation and dataset loading (JSONL, CSV, field mapping, unpivot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.errors import ConfigError
from aiestack.evals.datasets import load_examples
from aiestack.evals.suite import load_suite, parse_suite

pytestmark = pytest.mark.unit

BASE = {
    "name": "s",
    "dataset": {"path": "d.jsonl"},
    "systems": [{"name": "a", "model": "m", "params": {"temperature": 0, "max_tokens": 8, "stop": "\n"}}],
    "metrics": [{"name": "exact_match", "reference_key": "answer"}],
}


def test_a_suite_file_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "suite.yaml"
    path.write_text(
        "name: x\ndataset: {path: ../d.jsonl}\nsystems: [{name: a}]\nmetrics: [{name: latency}]\n"
    )
    suite = load_suite(path)
    assert suite.dataset_path.resolve() == (tmp_path / "d.jsonl").resolve()
    assert suite.concurrency == 8 and suite.prompt == "{{ input }}"


def test_params_and_metric_options_are_carried() -> None:
    suite = parse_suite(BASE)
    params = suite.systems[0].to_params()
    assert params.temperature == 0 and params.max_tokens == 8 and params.stop == ("\n",)
    assert suite.metrics[0].options == {"reference_key": "answer"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"sytems": []}, "sytems"),
        ({"systems": [{"name": "a", "params": {"temprature": 1}}]}, "systems.0.params"),
        ({"systems": [{"name": "a"}, {"name": "a"}]}, "systems"),
        ({"gates": [{"metric": "bleu", "min": 1}]}, "(root)"),
        ({"gates": [{"metric": "exact_match"}]}, "gates.0"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_mistakes_name_the_key(change: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_suite({**BASE, **change}, source="suite.yaml")
    assert key in info.value.key and info.value.hint


def test_select_systems_suggests_close_names() -> None:
    suite = parse_suite({**BASE, "systems": [{"name": "gemma"}, {"name": "other"}]})
    with pytest.raises(ConfigError, match="did you mean 'gemma'"):
        suite.select(["gema"])
    assert [s.name for s in suite.select(["other"]).systems] == ["other"]


def test_jsonl_with_ids_limit_offset_and_dotted_fields(tmp_path: Path) -> None:
    rows = [{"k": f"id{i}", "q": {"text": f"question {i}"}, "ans": f"{i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    suite = parse_suite(
        {
            **BASE,
            "dataset": {
                "path": "d.jsonl",
                "id": "k",
                "input": "q.text",
                "reference": "ans",
                "offset": 1,
                "limit": 2,
            },
        },
        base_dir=tmp_path,
    )
    examples = load_examples(suite.dataset, suite.dataset_path)
    assert [e.id for e in examples] == ["id1", "id2"]
    assert examples[0].input["input"] == "question 1" and examples[0].reference == "1"


def test_csv_with_split_references(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text('Question,Correct\n"Why, though?",A; B ;C\n', encoding="utf-8")
    suite = parse_suite(
        {
            **BASE,
            "dataset": {"path": "d.csv", "input": "Question", "reference": "Correct", "reference_split": ";"},
        },
        base_dir=tmp_path,
    )
    (example,) = load_examples(suite.dataset, suite.dataset_path)
    assert (
        example.id == "000000"
        and example.input["input"] == "Why, though?"
        and example.reference == ["A", "B", "C"]
    )


def test_unpivot_makes_one_example_per_column(tmp_path: Path) -> None:
    row = {"question": "q", "right": "r", "wrong": "w"}
    (tmp_path / "d.jsonl").write_text(json.dumps(row))
    unpivot = {"columns": {"right": "no", "wrong": "yes"}, "into": "answer", "label": "hallucinated"}
    suite = parse_suite(
        {
            **BASE,
            "dataset": {
                "path": "d.jsonl",
                "input": "answer",
                "reference": "hallucinated",
                "unpivot": unpivot,
            },
        },
        base_dir=tmp_path,
    )
    examples = load_examples(suite.dataset, suite.dataset_path)
    assert [(e.id, e.input["input"], e.reference) for e in examples] == [
        ("000000:right", "r", "no"),
        ("000000:wrong", "w", "yes"),
    ]
    assert "right" not in examples[0].input


def test_dataset_errors_are_actionable(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"q": 1}\nnot json\n')
    suite = parse_suite({**BASE, "dataset": {"path": "d.jsonl", "input": "q"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="line 2 is not valid JSON"):
        load_examples(suite.dataset, suite.dataset_path)
    missing = parse_suite({**BASE, "dataset": {"path": "d.jsonl", "input": "question"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="has no field 'question'"):
        load_examples(missing.dataset, missing.dataset_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_examples(suite.dataset, tmp_path / "nope.jsonl")
