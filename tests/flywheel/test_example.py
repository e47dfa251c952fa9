"""examples/flywheel is valid as shipped: its flywheel file, suite, data and configuration load."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from aiestack.evals.datasets import load_examples
from aiestack.evals.suite import load_suite
from aiestack.flywheel.spec import DiclCandidate, load_flywheel

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).parents[2] / "examples" / "flywheel"


def test_the_example_loads_and_its_test_set_is_apart_from_its_seeds() -> None:
    spec = load_flywheel(EXAMPLE / "flywheel.yaml")
    assert isinstance(spec.candidate, DiclCandidate) and spec.dataset is not None
    config = tomllib.loads((EXAMPLE / "aiestack.toml").read_text(encoding="utf-8"))
    assert spec.candidate.route in config["routes"] and "dicl" not in config["routes"][spec.candidate.route]
    suite = load_suite(spec.path(spec.evaluate.suite))
    assert [s.model for s in suite.systems] == [spec.candidate.route]
    examples = load_examples(suite.dataset, suite.dataset_path)
    seeds = [json.loads(line)["question"] for line in spec.path(spec.dataset.path).read_text().splitlines()]  # type: ignore[arg-type]
    assert len(examples) == 18 and len(seeds) == 13 and len(set(seeds)) == 12
    assert not {str(e.input["input"]) for e in examples} & set(seeds)  # no test message is a seed
