"""The companion use cases: each prompt goes into the registry, each suite runs end to end on a scripted model.

The scripted model answers every example with the suite's expected output (and judges with a top
score), so each quality metric must come out at 1.0: this proves that the shipped examples, expected
outputs, metrics (exact class, JSON schema, SQL executed on the shipped database, judge rubrics) and
registry prompts fit together. A wrong answer scoring 0 is each metric's own test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiestack.build import Stack, open_stack
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner
from aiestack.evals.suite import load_suite
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.base import EvalStore
from aiestack.types import ChatRequest

pytestmark = pytest.mark.unit

COMPANION = Path(__file__).resolve().parents[2] / "examples" / "companion"
SUITES = sorted(p.name for p in COMPANION.glob("*.yaml"))


class Oracle(FakeModel):
    """Answers each example with its expected output; as a judge, gives the top score."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__()
        self.answers = answers

    def _next(self, request: ChatRequest) -> Script:
        if request.params.response_format is not None and "eval_example" not in request.metadata:
            return Script(pieces=[json.dumps({"reasoning": "Matches the rubric's top level.", "score": 5})])
        return Script(pieces=[self.answers[request.metadata["eval_example"]]])


def _expected(suite_file: Path) -> dict[str, str]:
    """What a perfect system answers, per example id, from the shipped data."""
    suite = load_suite(suite_file)
    answers: dict[str, str] = {}
    for example in load_examples(suite.dataset, suite.dataset_path):
        row = {**example.input, **example.metadata}
        if "example" in row:  # ideation: the good answer kept with the example
            answers[example.id] = json.dumps(row["example"])
        elif suite.name == "grab-data-entities":
            answers[example.id] = json.dumps({"category": example.reference, "reason": "From the values."})
        else:
            answers[example.id] = str(example.reference)
    return answers


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    target = tmp_path / "examples" / "companion"
    shutil.copytree(COMPANION, target)
    return target


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Every guard runs at its default. (The MiniLM-combined injection head that was the default until
    # 2026-12-07 scored whatnot's w08 0.53-0.64 and blocked it, so this fixture used to flag instead;
    # the lexical head, the default since, passes all six suites' examples.)
    settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="oracle")
    oracle = Oracle({})
    async with open_stack(settings, models=[ModelEntry(name="oracle", provider=oracle, upstream="oracle")]) as s:
        yield s


def test_every_use_case_has_a_prompt_and_a_suite() -> None:
    prompts = sorted(p.stem for p in (COMPANION / "prompts").glob("*.j2"))
    assert len(prompts) == len(SUITES) == 6
    refs = {s.prompt_ref for name in SUITES for s in load_suite(COMPANION / name).systems}
    assert refs == {f"{p}@production" for p in prompts}


@pytest.mark.slow  # each suite's examples through the default guards
@pytest.mark.parametrize("name", SUITES)
async def test_each_suite_runs_on_its_registry_prompt_and_a_perfect_system_scores_1(
    clone: Path, stack: Stack, name: str
) -> None:
    assert stack.prompts is not None and isinstance(stack.store, EvalStore)
    pushed = stack.prompts.push_dir(clone / "prompts", label="production")
    assert len(pushed) == 6 and all(created for _, created in pushed)
    suite = load_suite(clone / name)
    oracle = stack.models.resolve("oracle").provider
    assert isinstance(oracle, Oracle)
    oracle.answers = _expected(clone / name)
    systems = [s.model_copy(update={"model": "oracle"}) for s in suite.systems]
    judge = suite.judge.model_copy(update={"model": "oracle"}) if suite.judge is not None else None
    suite = suite.model_copy(update={"systems": systems, "judge": judge})
    examples = load_examples(suite.dataset, suite.dataset_path)
    result = await EvalRunner(stack.chat, stack.store, prompts=stack.prompts, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)
    assert result.calls >= len(examples) and [(r.example_id, r.error) for r in result.results if r.error] == []
    summary = result.run.summary
    ref = suite.systems[0].prompt_ref or ""
    version = stack.prompts.get(ref)
    assert summary["prompts"] == {suite.systems[0].name: f"{version.name}@{version.version}"}
    answered = [r for r in oracle.requests if "eval_example" in r.metadata]
    assert answered and all(r.messages[0].role == "system" for r in answered)
    # the registry's template, rendered with the example's fields (the canary guard appends its marker)
    assert answered[0].messages[0].text.startswith(version.template.splitlines()[0])
    assert "{{" not in answered[0].messages[0].text
    metrics = summary["systems"][suite.systems[0].name]["metrics"]
    quality = {m: v["mean"] for m, v in metrics.items() if m != "latency"}
    assert quality and all(v == 1.0 for v in quality.values()), quality


async def test_a_missing_registry_prompt_is_a_config_error_that_says_how_to_push_it(
    clone: Path, stack: Stack
) -> None:
    from aiestack.errors import ConfigError

    suite = load_suite(clone / "cursor.yaml")
    examples = load_examples(suite.dataset, suite.dataset_path)
    with pytest.raises(ConfigError, match="prompts import"):
        await EvalRunner(stack.chat, stack.store, prompts=stack.prompts, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)  # type: ignore[arg-type]
