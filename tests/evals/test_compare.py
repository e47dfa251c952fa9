"""Comparative ranking in suites: pairwise battles judged in both orders, Bradley–Terry, storage, reports."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from aiestack.build import Stack, open_stack
from aiestack.errors import ConfigError
from aiestack.evals.call_cache import CallCache
from aiestack.evals.compare import ranking_dict, stored_ranking
from aiestack.evals.datasets import load_examples
from aiestack.evals.ranking import Battle, Outcome, rank
from aiestack.evals.report import ranking_tables
from aiestack.evals.report_html import render_html
from aiestack.evals.runner import EvalRunner, RunResult
from aiestack.evals.suite import Suite, parse_suite
from aiestack.evals.summary import summaries_from_run
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.base import EvalStore
from aiestack.types import ChatRequest, EvalRun

pytestmark = pytest.mark.unit

_SHOWN = re.compile(
    r"\[Question\]\n(?P<q>.*?)\n\n\[Answer A\]\n(?P<a>.*?)\n\n\[Answer B\]\n(?P<b>.*?)\n\n", re.S
)
QUALITY = {"good": 3, "mid": 2, "bad": 1}


@dataclass
class PreferenceJudge(FakeModel):
    """A judge that prefers the answer from the better system (the answer starts with its name).

    On ``biased`` questions it always says "A" (pure position bias); on ``broken`` ones it replies
    with no JSON. Replies are decided from the request, so the order calls arrive in does not matter.
    """

    biased: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)

    def _next(self, request: ChatRequest) -> Script:
        shown = _SHOWN.search(request.messages[-1].text)
        assert shown is not None, request.messages[-1].text
        if shown["q"] in self.broken:
            return Script(pieces=["I cannot decide."])
        if shown["q"] in self.biased:
            winner = "A"
        else:
            qa, qb = QUALITY[shown["a"].split()[0]], QUALITY[shown["b"].split()[0]]
            winner = "A" if qa > qb else "B" if qb > qa else "tie"
        return Script(pieces=[json.dumps({"reasoning": "compared", "winner": winner})])


def _suite(
    tmp_path: Path, n: int, systems: tuple[str, ...] = ("bad", "mid", "good"), **compare: Any
) -> Suite:
    rows = [{"id": f"q{i}", "q": f"w{i}", "a": f"w{i}"} for i in range(n)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    doc = {
        "name": "cmp",
        "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
        "systems": [{"name": s, "model": "scripted", "prompt": f"{s} {{{{ input }}}}"} for s in systems],
        "metrics": [{"name": "contains"}],
        "compare": {"judge": {"model": "judge"}, **compare},
        "concurrency": 4,
    }
    return parse_suite(doc, base_dir=tmp_path)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, PreferenceJudge]]:
    """Systems call 'scripted' (an echoing FakeModel); the pairwise judge is 'judge'."""
    judge = PreferenceJudge()
    settings = Settings(
        data_dir=tmp_path / "data",
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
    )
    entries = [
        ModelEntry(name="scripted", provider=FakeModel(), upstream="scripted"),
        ModelEntry(name="judge", provider=judge, upstream="judge"),
    ]
    async with open_stack(settings, models=entries) as s:
        yield s, judge


def _store(stack: Stack) -> EvalStore:
    assert isinstance(stack.store, EvalStore)
    return stack.store


async def _run(stack: Stack, suite: Suite, cache: CallCache | None = None) -> RunResult:
    examples = load_examples(suite.dataset, suite.dataset_path)
    return await EvalRunner(stack.chat, _store(stack), cache=cache, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)


async def test_the_better_system_ranks_first_and_the_battles_are_stored(
    tmp_path: Path, stack: tuple[Stack, PreferenceJudge]
) -> None:
    s, judge = stack
    result = await _run(s, _suite(tmp_path, 8, bootstrap=200))
    assert len(judge.requests) == 8 * 3 * 2  # every pair on every example, in both orders
    stored = _store(s).get_eval_run(result.run.id)
    assert stored is not None
    section = stored.summary["compare"]
    assert section["judged"] == 24 and section["failed"] == 0 and section["consistency_rate"] == 1.0
    assert section["pairs"] == [["bad", "mid"], ["bad", "good"], ["mid", "good"]]
    assert section["prompt"] == "pairwise@1" and section["judge_model"] == "judge"
    battle = next(
        b for b in section["battles"] if b["example"] == "q3" and b["a"] == "bad" and b["b"] == "good"
    )
    assert battle["winner"] == "b" and battle["first"] == battle["second"] == "b" and battle["consistent"]
    found = stored_ranking(stored.summary)
    assert found is not None and found[1] is not None
    ranking = found[1]
    assert [r.system for r in ranking.ratings] == ["good", "mid", "bad"]
    good, mid, bad = ranking.ratings
    assert good.wins == 16 and good.losses == 0 and bad.losses == 16
    assert good.low <= good.rating <= good.high and good.low > mid.high > bad.high
    assert good.elo > mid.elo > bad.elo
    assert ranking.win_rate["good"]["bad"] == 1.0 and ranking.win_rate["bad"]["mid"] == 0.0


async def test_verdicts_that_flip_with_the_order_count_as_ties(
    tmp_path: Path, stack: tuple[Stack, PreferenceJudge]
) -> None:
    s, judge = stack
    judge.biased = {"w0", "w1"}
    result = await _run(s, _suite(tmp_path, 8, systems=("bad", "good"), bootstrap=200))
    section = result.run.summary["compare"]
    assert section["consistency_rate"] == pytest.approx(6 / 8)
    flipped = [b for b in section["battles"] if not b["consistent"]]
    assert {b["example"] for b in flipped} == {"q0", "q1"}
    assert all(b["winner"] == "tie" and b["first"] == "a" and b["second"] == "b" for b in flipped)
    ratings = {r["system"]: r for r in section["ranking"]["ratings"]}
    assert ratings["good"]["wins"] == 6 and ratings["good"]["ties"] == 2
    assert section["ranking"]["win_rate"]["good"]["bad"] == pytest.approx((6 + 1) / 8)


async def test_a_re_run_makes_no_judge_calls(tmp_path: Path, stack: tuple[Stack, PreferenceJudge]) -> None:
    s, judge = stack
    suite = _suite(tmp_path, 5, bootstrap=200)
    cache = CallCache(tmp_path / "cache.db")
    first = await _run(s, suite, cache)
    asked = len(judge.requests)
    second = await _run(s, suite, cache)
    assert asked == 5 * 3 * 2 and len(judge.requests) == asked and second.calls == 0
    assert second.run.summary["compare"]["battles"] == first.run.summary["compare"]["battles"]
    cache.close()


async def test_failed_verdicts_are_kept_apart_and_pairs_can_be_chosen(
    tmp_path: Path, stack: tuple[Stack, PreferenceJudge]
) -> None:
    s, judge = stack
    judge.broken = {"w2"}
    result = await _run(s, _suite(tmp_path, 4, pairs=[["good", "bad"]], bootstrap=200))
    section = result.run.summary["compare"]
    assert section["pairs"] == [["good", "bad"]] and section["judged"] == 3 and section["failed"] == 1
    failed = [b for b in section["battles"] if b["error"]]
    assert [b["example"] for b in failed] == ["q2"] and failed[0]["winner"] is None
    assert "JSON" in failed[0]["error"]
    assert {(b["a"], b["b"]) for b in section["battles"]} == {("good", "bad")}


async def test_rounds_ask_again_with_distinct_seeds_and_the_judge_params(
    tmp_path: Path, stack: tuple[Stack, PreferenceJudge]
) -> None:
    s, judge = stack
    suite = _suite(tmp_path, 2, systems=("bad", "good"), rounds=3, bootstrap=200)
    suite = suite.model_copy(
        update={
            "compare": suite.compare.model_copy(  # type: ignore[union-attr]
                update={"judge": suite.compare.judge.model_copy(update={"params": {"temperature": 0.7}})}  # type: ignore[union-attr]
            )
        }
    )
    result = await _run(s, suite)
    assert len(judge.requests) == 2 * 3 * 2 and result.run.summary["compare"]["judged"] == 6
    assert {r.params.seed for r in judge.requests} == {None, 1, 2}
    assert {r.params.temperature for r in judge.requests} == {0.7}
    assert all(r.params.response_format is not None for r in judge.requests)


# --------------------------------------------------------------------------- validation


def _doc(systems: int = 2, **compare: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "dataset": {"path": "d.jsonl"},
        "systems": [{"name": f"s{i}"} for i in range(systems)],
        "metrics": [{"name": "exact_match"}],
        "compare": compare,
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(1), "at least two systems"),
        (_doc(pairs=[["s0", "nope"]]), "'nope', which is not among the systems"),
        (_doc(pairs=[["s0", "s0"]]), "with itself"),
        (_doc(pairs=[["s0", "s1"], ["s1", "s0"]]), "listed twice"),
        (_doc(pairs=[["s0", "s1", "s1"]]), "exactly two systems"),
        (_doc(pairs=[]), "compare.pairs is empty"),
        (_doc(pairs="some"), "compare.pairs"),
        (_doc(rounds=0), "compare.rounds"),
        (_doc(judge={"prompt": "nope@3"}), "compare.judge.prompt"),
        (_doc(judge={"params": {"temprature": 1}}), "compare.judge.params"),
        (_doc(judge={"params": {"response_format": {"type": "json_object"}}}), "its own JSON schema"),
        (_doc(judge={"modle": "x"}), "unknown key"),
    ],
)
def test_compare_mistakes_are_config_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_suite(doc)


def test_selecting_systems_keeps_the_pairs_among_them() -> None:
    suite = parse_suite(_doc(3))
    assert suite.select(["s0", "s2"]).compare.pairs == [["s0", "s2"]]  # type: ignore[union-attr]
    assert suite.select(["s1"]).compare is None
    assert parse_suite(_doc(3, pairs=[["s1", "s2"]])).select(["s0", "s1"]).compare is None


# --------------------------------------------------------------------------- reports


def _compared_run() -> EvalRun:
    outcomes: list[Outcome] = ["a", "a", "a", "a", "a", "a", "tie", "b"]
    battles: list[Battle] = [("<b>good</b>", "bad", o) for o in outcomes]
    section = {
        "judge_model": "judge",
        "prompt": "pairwise@1",
        "judged": 8,
        "failed": 1,
        "skipped": 0,
        "consistency_rate": 0.875,
        "battles": [],
        "ranking": ranking_dict(rank(battles, bootstrap=200)),
    }
    return EvalRun("r", "cmp", ("<b>good</b>", "bad"), summary={"status": "finished", "compare": section})


def test_the_terminal_report_shows_the_ranking_and_the_win_rate_matrix() -> None:
    found = stored_ranking(_compared_run().summary)
    assert found is not None
    console = Console(record=True, width=160)
    for table in ranking_tables(*found):
        console.print(table)
    text = console.export_text()
    assert text.index("<b>good</b>") < text.index("bad")
    assert "Bradley–Terry" in text and "consistency 88%" in text and "0.81" in text and "0.19" in text


def test_the_html_report_draws_the_ranking_escaped() -> None:
    run = _compared_run()
    page = render_html(run, summaries_from_run(run.summary), [])
    assert "Pairwise ranking" in page and "consistency: <b>88%</b>" in page
    assert "<b>good</b>" not in page.replace("<b>88%</b>", "") and "&lt;b&gt;good&lt;/b&gt;" in page
    chart = page[page.index("Bradley–Terry rating") :]
    assert "<circle" in chart and "<path" in chart  # dots with CI whiskers
    assert "background:#" in page  # the heat-coloured win-rate matrix
    assert "0.81" in page and "0.19" in page


def test_a_run_without_compare_has_no_ranking_section() -> None:
    run = EvalRun("r", "cmp", ("a",), summary={"status": "finished"})
    assert stored_ranking(run.summary) is None
    assert "Pairwise ranking" not in render_html(run, {}, [])
