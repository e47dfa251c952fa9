"""Prompt optimisation on a model whose right prompt is known (tests/flywheel/kit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.datasets import DatasetRow, normalise
from aiestack.errors import ConfigError
from aiestack.flywheel.prompt_opt import (
    OptimiseOptions,
    PromptOptimiser,
    check_template,
    parse_rewrite,
    with_examples,
)
from aiestack.stores.datasets import DatasetStore
from aiestack.testing.sidecalls import ScriptedCaller

from .kit import WORDS, evaluator, load, obedient_stack, write_suite

pytestmark = pytest.mark.unit


async def test_the_rewrite_that_works_is_pushed_with_its_lineage(tmp_path: Path) -> None:
    suite, examples = load(write_suite(tmp_path))
    rewriter = ScriptedCaller([
        "Sure! <prompt>Repeat the user's words in UPPERCASE letters.</prompt>",
        "<prompt>Hello {{ customer_name }}, repeat the words.</prompt>",  # a variable the prompt lacks
        "```\nRepeat the words politely.\n```",
    ])  # fmt: skip
    async with obedient_stack(tmp_path) as (stack, model):
        assert stack.prompts is not None
        stack.prompts.push("shout", "Repeat the user's words.", label="production")
        optimiser = PromptOptimiser(stack.prompts, evaluator(stack), rewriter=rewriter)
        result = await optimiser.optimise("shout", suite, examples, OptimiseOptions(rewrites=3, failures=2))
        assert result.pushed is not None and result.pushed.version == 2
        assert result.pushed.template == "Repeat the user's words in UPPERCASE letters."
        assert result.best.candidate.id == "rewrite-1" and result.best.score == 1.0
        assert {s.candidate.id: s.score for s in result.scored} == {"current": 0.0, "rewrite-1": 1.0, "rewrite-3": 0.0}
        assert result.rejected == (("rewrite-2", "it reads variables the prompt does not have: customer_name"),)
        assert result.decision.passed and result.decision.low is not None and result.decision.low > 0
        lineage = result.pushed.metadata["optimised"]
        assert lineage["from"] == "shout@1" and lineage["winner"] == "rewrite-1" and lineage["dev_examples"] == 12
        assert {c["id"] for c in lineage["candidates"]} == {"current", "rewrite-1", "rewrite-3"}
        runs = {c["eval_run"] for c in lineage["candidates"]}
        assert all(stack.store.get_eval_run(r) is not None for r in runs)  # type: ignore[attr-defined]
        # the production label did not move: promotion is the flywheel's (or a person's) decision
        assert stack.prompts.get("shout@production").version == 1
        # the rewriter saw the prompt and the failing examples, through the side-call seam's shape
        asked = rewriter.requests[0].messages[0].text
        assert "Repeat the user's words." in asked and "APPLE PIE" in asked and rewriter.requests[0].model == "obedient"
        # the current version and 2 valid rewrites x 12 examples: every call made (no cache answered)
        assert len(model.requests) == 3 * 12


async def test_nothing_is_pushed_when_no_candidate_beats_the_current_version(tmp_path: Path) -> None:
    suite, examples = load(write_suite(tmp_path))
    async with obedient_stack(tmp_path) as (stack, _):
        assert stack.prompts is not None
        stack.prompts.push("shout", "Repeat the user's words.", label="production")
        rewriter = ScriptedCaller(["<prompt>Repeat them slowly.</prompt>"])
        result = await PromptOptimiser(stack.prompts, evaluator(stack), rewriter=rewriter).optimise(
            "shout", suite, examples, OptimiseOptions(rewrites=1))
        assert result.pushed is None and not result.decision.passed
        assert "no candidate scored better" in result.decision.reason
        assert [v.version for v in stack.prompts.store.prompt_versions("shout")] == [1]


async def test_a_small_gain_without_evidence_is_not_pushed(tmp_path: Path) -> None:
    """One more right answer out of 12 is not beyond sampling noise: the interval reaches 0."""
    suite, examples = load(write_suite(tmp_path))
    async with obedient_stack(tmp_path) as (stack, model):
        assert stack.prompts is not None
        stack.prompts.push("shout", "Repeat the user's words.", label="production")
        # the candidate's run gets one right answer scripted in front of its 12 calls
        rewriter = ScriptedCaller(["<prompt>Repeat the words once.</prompt>"])

        evaluate = evaluator(stack)
        runs = 0

        async def one_better(s, items):  # type: ignore[no-untyped-def]
            nonlocal runs
            runs += 1
            if runs == 2:
                model.enqueue([WORDS[0].upper()])
            return await evaluate(s, items)

        optimiser = PromptOptimiser(stack.prompts, one_better, rewriter=rewriter)
        result = await optimiser.optimise("shout", suite, examples, OptimiseOptions(rewrites=1))
        assert result.best.candidate.id == "rewrite-1" and result.best.score == pytest.approx(1 / 12)
        assert result.pushed is None and not result.decision.passed
        assert "no evidence of improvement" in result.decision.reason and "n=12" in result.decision.reason


async def test_example_sets_from_a_dataset_never_show_a_dev_question(tmp_path: Path) -> None:
    suite, examples = load(write_suite(tmp_path, n=6))
    rows = [DatasetRow(normalise({"question": q, "answer": q.upper()}, "chat"), {"generator": "test"})
            for q in ["red door", "soft rug", "warm bread", WORDS[0]]]  # the last one is a dev question
    async with obedient_stack(tmp_path) as (stack, _):
        assert stack.prompts is not None and isinstance(stack.store, DatasetStore)
        stack.store.push_dataset("shouts", "chat", rows, created_at=1.0)
        stack.prompts.push("shout", "Repeat the user's words.", label="production")
        optimiser = PromptOptimiser(stack.prompts, evaluator(stack), datasets=stack.store)
        options = OptimiseOptions(rewrites=0, examples="shouts", shots=(1, 2, 9), sets=2)
        result = await optimiser.optimise("shout", suite, examples, options, label="staging")
        by_id = {s.candidate.id: s for s in result.scored}
        assert by_id["examples-k1-1"].score == 0.0  # one demonstration is not enough for this model
        assert by_id["examples-k2-1"].score == 1.0
        reasons = dict(result.rejected)
        assert reasons["examples:shouts@1"] == "1 rows left out: the dev set asks the same question"
        assert reasons["examples-k9"] == "shouts@1 has 3 usable rows, fewer than 9"
        assert result.pushed is not None and WORDS[0] not in result.pushed.template
        assert "Output: RED DOOR" in result.pushed.template or "Output: SOFT RUG" in result.pushed.template
        assert stack.prompts.get("shout@staging").version == result.pushed.version
        assert stack.prompts.get("shout@production").version == 1
        chosen = result.pushed.metadata["optimised"]["candidates"]
        assert any(c["detail"].get("dataset") == "shouts@1" and len(c["detail"]["rows"]) == 2 for c in chosen)


def test_rewrites_are_parsed_and_checked() -> None:
    assert parse_rewrite("blah <prompt>\n  Do X.\n</prompt> bye") == "Do X."
    assert parse_rewrite("```text\nDo Y.\n```") == "Do Y."
    assert parse_rewrite("  Do Z.  ") == "Do Z."
    assert check_template("Hi {{ name }} on {{ today }}", {"name"}) is None
    assert check_template("{% if %}", set()) is not None
    assert check_template("   ", set()) == "the rewrite is empty"
    # an example is text: a {{ in it is not a placeholder
    from aiestack.prompts.templates import Renderer
    from aiestack.stores.prompts import PromptVersion

    text = with_examples("Answer.", [("what is {{ x }}?", "a {% raw %} tag")])
    assert check_template(text, set()) is None
    rendered = Renderer().render(PromptVersion("p", 1, text, "h", 0.0), {})
    assert "what is {{ x }}?" in rendered


async def test_a_suite_with_several_systems_needs_one_named(tmp_path: Path) -> None:
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace(
        "systems: [{name: shout, model: obedient, prompt_ref: shout@production}]",
        "systems: [{name: a, model: obedient}, {name: b, model: obedient}]"), encoding="utf-8")
    suite, examples = load(path)
    async with obedient_stack(tmp_path) as (stack, _):
        assert stack.prompts is not None
        stack.prompts.push("shout", "Repeat.", label="production")
        with pytest.raises(ConfigError, match="--system"):
            await PromptOptimiser(stack.prompts, evaluator(stack)).optimise("shout", suite, examples, OptimiseOptions(rewrites=0))
