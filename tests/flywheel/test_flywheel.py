"""The loop: build → curate → candidate → evaluate → promote, stored, resumable, promoted only on evidence."""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiestack.build import Stack
from aiestack.cli.flywheel import flywheel_tools
from aiestack.errors import ConfigError
from aiestack.flywheel.runner import Flywheel, FlywheelTools, StepFailed
from aiestack.flywheel.spec import load_flywheel, parse_flywheel
from aiestack.models.registry import ModelEntry
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.testing.sidecalls import ScriptedCaller

from .kit import Obedient, obedient_stack, write_suite

pytestmark = pytest.mark.unit
SEEDS = ["red door", "soft rug", "warm bread", "wet grass", "old map"]


def _files(folder: Path, *, test_upper: bool = True, candidate: dict[str, Any] | None = None) -> Path:
    write_suite(folder, n=8, name="dev")
    write_suite(folder, n=10, name="test")
    if not test_upper:  # a test set that wants the words as they are: upper case is worse there
        rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
        (folder / "test.jsonl").write_text("\n".join(json.dumps({**r, "a": r["q"]}) for r in rows), encoding="utf-8")
    (folder / "seed.jsonl").write_text(
        "\n".join(json.dumps({"question": q, "answer": q.upper()}) for q in [*SEEDS, SEEDS[0]]), encoding="utf-8")
    spec = {
        "name": "shout",
        "dataset": {"name": "shouts", "from": "file", "path": "seed.jsonl", "curate": ["exact"]},
        "candidate": candidate or {"kind": "prompt", "prompt": "shout", "suite": "dev.yaml", "rewrites": 1, "examples": False},
        "evaluate": {"suite": "test.yaml"},
        "promote": {"label": "production"},
    }
    path = folder / "flywheel.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, Obedient]]:
    routes = {"shout": {"deployments": [{"model": "obedient"}]}}
    async with obedient_stack(tmp_path, routes=routes) as (s, model):
        assert s.prompts is not None
        s.prompts.push("shout", "Repeat the user's words.", label="production")
        s.prompts.push("shout", "Repeat the user's words!", label="staging")  # a label the run must not touch
        yield s, model


def _tools(stack: Stack, model: Obedient, rewrites: list[str]) -> FlywheelTools:
    tools: FlywheelTools = flywheel_tools(stack, stack.settings, models=[ModelEntry("obedient", model, "obedient")], use_cache=False)
    tools.rewriter = ScriptedCaller(rewrites)
    return tools


GOOD = ["<prompt>Repeat the user's words in UPPERCASE.</prompt>"]


async def test_a_passing_gate_promotes_exactly_the_declared_change(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    s, model = stack
    spec = load_flywheel(_files(tmp_path))
    record = await Flywheel(_tools(s, model, GOOD)).run(spec, source="flywheel.yaml")
    assert record.status == "finished" and record.outcome == "promoted"
    assert record.detail == "promoted: shout@production 1 → 3"
    assert s.prompts is not None
    assert s.prompts.get("shout@production").template == "Repeat the user's words in UPPERCASE."
    assert s.prompts.get("shout@staging").version == 2  # untouched
    assert [v.version for v in s.prompts.store.prompt_versions("shout")] == [1, 2, 3]
    steps = {step.name: step for step in s.store.flywheel_steps(record.run_id)}  # type: ignore[attr-defined]
    assert list(steps) == ["dataset", "curate", "candidate", "evaluate", "promote"]
    assert all(step.status == "done" and step.finished_at is not None for step in steps.values())
    # the lineage: file rows → dataset version → curated version → candidate version → eval runs → promotion
    assert steps["dataset"].outputs["dataset"] == "shouts@1" and steps["dataset"].outputs["rows"] == 6
    assert steps["curate"].outputs["dataset"] == "shouts@2" and steps["curate"].outputs["parent"] == "shouts@1"
    assert steps["curate"].outputs["removed"] == {"exact": {"exact duplicate": 1}}
    assert steps["candidate"].outputs["candidate"] == "shout@3" and steps["candidate"].outputs["base"] == "shout@1"
    ev = steps["evaluate"].outputs
    assert ev["baseline"] == "shout@1 (shout@production)" and ev["candidate"] == "shout@3" and ev["passed"]
    base_run = s.store.get_eval_run(ev["baseline_run"])  # type: ignore[attr-defined]
    cand_run = s.store.get_eval_run(ev["candidate_run"])  # type: ignore[attr-defined]
    assert base_run.summary["prompts"] == {"shout": "shout@1"} and cand_run.summary["prompts"] == {"shout": "shout@3"}
    assert ev["decision"]["baseline"] == 0.0 and ev["decision"]["candidate"] == 1.0 and ev["decision"]["n"] == 10
    assert steps["promote"].outputs["change"] == {"kind": "prompt_label", "prompt": "shout", "label": "production", "from": 1, "to": 3}
    assert record.spec["fingerprint"] == spec.fingerprint()


async def test_a_rerun_on_the_same_data_adds_no_dataset_versions(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    """The build step pushed the raw rows again after the curated version (@3 = @1), and curation
    then pushed @4 = @2: each re-run added two copies. Now the second run reuses both."""
    s, model = stack
    spec = load_flywheel(_files(tmp_path))
    await Flywheel(_tools(s, model, GOOD)).run(spec)
    again = await Flywheel(_tools(s, model, GOOD)).run(spec)
    steps = {step.name: step.outputs for step in s.store.flywheel_steps(again.run_id)}  # type: ignore[attr-defined]
    assert steps["dataset"]["dataset"] == "shouts@1" and steps["dataset"]["created"] is False
    assert steps["dataset"]["summary"] == "unchanged: shouts@1, 6 rows"
    assert steps["curate"]["dataset"] == "shouts@2" and steps["curate"]["parent"] == "shouts@1"
    assert [v.version for v in s.store.dataset_versions("shouts")] == [1, 2]  # type: ignore[attr-defined]


async def test_a_failing_gate_does_not_promote_and_says_why(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    s, model = stack
    spec = load_flywheel(_files(tmp_path, test_upper=False))
    record = await Flywheel(_tools(s, model, GOOD)).run(spec)
    assert record.status == "finished" and record.outcome == "refused"
    assert record.detail.startswith("not promoted: the gate failed: no evidence of improvement: exact_match 1 → 0")
    assert s.prompts is not None and s.prompts.get("shout@production").version == 1  # nothing moved
    promote = s.store.flywheel_steps(record.run_id)[-1]  # type: ignore[attr-defined]
    assert promote.name == "promote" and promote.outputs["promoted"] is False and "change" not in promote.outputs


async def test_a_suite_gate_that_fails_refuses_even_an_improvement(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    s, model = stack
    path = _files(tmp_path)
    test = tmp_path / "test.yaml"
    test.write_text(test.read_text() + "gates: [{metric: exact_match, min: 1.5}]\n", encoding="utf-8")  # cannot pass
    record = await Flywheel(_tools(s, model, GOOD)).run(load_flywheel(path))
    assert record.outcome == "refused" and "gate exact_match >= 1.5 failed: mean 1 < min 1.5" in record.detail
    assert s.prompts is not None and s.prompts.get("shout@production").version == 1


async def test_no_better_candidate_stops_before_the_evaluation(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    s, model = stack
    record = await Flywheel(_tools(s, model, ["<prompt>Repeat them.</prompt>"])).run(load_flywheel(_files(tmp_path)))
    assert record.outcome == "refused" and "no candidate beat shout@1" in record.detail
    assert [st.name for st in s.store.flywheel_steps(record.run_id)] == ["dataset", "curate", "candidate"]  # type: ignore[attr-defined]


async def test_an_interrupted_run_resumes_after_its_finished_steps(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    s, model = stack
    spec = load_flywheel(_files(tmp_path))
    tools = _tools(s, model, GOOD)
    evaluate = tools.evaluate
    calls = {"n": 0}

    async def flaky(suite: Any, examples: Any) -> Any:
        calls["n"] += 1
        if suite.name == "test" and calls.get("failed") is None:
            calls["failed"] = 1
            raise ConnectionError("the eval upstream went away")
        return await evaluate(suite, examples)

    tools.evaluate = flaky
    flywheel = Flywheel(tools)
    with pytest.raises(StepFailed, match="step evaluate failed: ConnectionError: the eval upstream went away") as info:
        await flywheel.run(spec)
    assert "--resume" in (info.value.hint or "")
    run_id = s.store.list_flywheel_runs()[0].run_id  # type: ignore[attr-defined]
    failed = s.store.get_flywheel_run(run_id)  # type: ignore[attr-defined]
    assert failed.status == "failed" and "step evaluate failed" in failed.detail
    assert [(st.name, st.status) for st in s.store.flywheel_steps(run_id)] == [  # type: ignore[attr-defined]
        ("dataset", "done"), ("curate", "done"), ("candidate", "done"), ("evaluate", "failed")]
    rewrites_before, model_calls_before = len(tools.rewriter.requests), len(model.requests)  # type: ignore[union-attr]
    record = await flywheel.run(spec, run_id=run_id)
    assert record.run_id == run_id and record.outcome == "promoted"
    assert len(tools.rewriter.requests) == rewrites_before  # type: ignore[union-attr]  # the candidate was not made again
    assert len(model.requests) - model_calls_before == 2 * 10  # only the evaluation: baseline and candidate on 10
    assert [d.version for d in s.store.dataset_versions("shouts")] == [1, 2]  # type: ignore[attr-defined]
    assert [st.status for st in s.store.flywheel_steps(run_id)] == ["done"] * 5  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="is finished"):
        await flywheel.run(spec, run_id=run_id)
    changed = spec.model_copy(update={"evaluate": spec.evaluate.model_copy(update={"min_gain": 0.5})})
    other = await Flywheel(tools).run(spec)  # a new run id
    with pytest.raises(ConfigError, match="another version"):
        await flywheel.run(changed, run_id=other.run_id)


async def test_dicl_is_promoted_into_the_route_config(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    s, model = stack
    s.resources.use(embeddings=BagOfWordsEmbeddings(dim=64))
    config = tmp_path / "aiestack.toml"
    config.write_text('# my config\ndefault_model = "fake"\n\n[routes.shout]  # the route\ndeployments = ["obedient"]\n', encoding="utf-8")
    path = _files(tmp_path, candidate={"kind": "dicl", "route": "shout", "k": 2, "min_similarity": -1})
    test = tmp_path / "test.yaml"
    test.write_text(test.read_text().replace("model: obedient, prompt_ref: shout@production", "model: shout"), encoding="utf-8")
    data = yaml.safe_load(path.read_text())
    data["promote"] = {"config": "aiestack.toml"}
    spec = parse_flywheel(data, base_dir=tmp_path)
    record = await Flywheel(_tools(s, model, [])).run(spec)
    assert record.outcome == "promoted", record.detail
    text = config.read_text()
    assert text.startswith("# my config\n") and "# the route" in text
    assert tomllib.loads(text)["routes"]["shout"] == {
        "deployments": ["obedient"], "dicl": {"dataset": "shouts@2", "k": 2, "min_similarity": -1}}
    ev = s.store.flywheel_steps(record.run_id)[3].outputs  # type: ignore[attr-defined]
    assert ev["decision"]["baseline"] == 0.0 and ev["decision"]["candidate"] == 1.0


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"candidate": {"kind": "prompt", "prompt": "shout", "suite": "d.yaml", "rewrites": -1}}, "candidate.rewrites", "greater than or equal to 0"),
    ({"candidate": {"kind": "lora", "prompt": "x"}}, "candidate.kind", "prompt, dicl, sft, dpo"),
    ({"candidate": {"prompt": "x"}}, "candidate.kind", "prompt, dicl, sft, dpo"),
    ({"candidate": {"kind": "dpo", "route": "r"}, "dataset": {"name": "d"}}, "(root)", "needs dataset.kind: preference"),
    ({"candidate": {"kind": "sft", "route": "r", "share": 0}}, "candidate.share", "greater than 0"),
    ({"evaluate": {"sutie": "t.yaml"}}, "evaluate.sutie", "unknown field"),
    ({"evaluate": {}}, "evaluate.suite", "required"),
    ({"dataset": {"name": "d", "from": "file"}}, "dataset", "from: file needs a path"),
    ({"dataset": {"name": "d", "filters": {"since": "last week"}}}, "dataset.filters.since", "not a date"),
    ({"name": "Has Spaces"}, "name", "pattern"),
])
def test_a_bad_file_names_the_field(change: dict[str, Any], field: str, says: str) -> None:
    data: dict[str, Any] = {"name": "x", "candidate": {"kind": "prompt", "prompt": "shout", "suite": "d.yaml"},
                            "evaluate": {"suite": "t.yaml"}, **change}
    with pytest.raises(ConfigError) as info:
        parse_flywheel(data, source="fw.yaml")
    assert info.value.key == f"fw.yaml: {field}" and says in info.value.message, (info.value.key, info.value.message)
    if field == "evaluate.sutie":
        assert "did you mean 'suite'?" in (info.value.hint or "")


def test_a_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_flywheel(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_flywheel(tmp_path / "bad.yaml")


class _Upper(Obedient):
    """What the finetuned model learnt: upper case, whatever the prompt says."""

    def _next(self, request: Any) -> Any:
        from aiestack.models.fake import Script
        from aiestack.types import last_user_text

        return Script(pieces=[last_user_text(request.messages).upper()])


async def test_a_lora_candidate_is_trained_evaluated_and_deployed_for_a_share_of_the_route(tmp_path: Path, stack: tuple[Stack, Obedient]) -> None:
    from contextlib import asynccontextmanager

    from aiestack.build import open_stack
    from aiestack.cli.flywheel import _Borrowed
    from aiestack.evals.runner import EvalRunner
    from aiestack.finetune import FinetuneResult

    s, model = stack
    config = tmp_path / "aiestack.toml"
    config.write_text('[routes.shout]\ndeployments = [{ model = "obedient", weight = 3 }]\n', encoding="utf-8")
    path = _files(tmp_path, candidate={"kind": "sft", "route": "shout", "max_steps": 5, "share": 0.25})
    test = tmp_path / "test.yaml"
    test.write_text(test.read_text().replace("model: obedient, prompt_ref: shout@production", "model: shout"), encoding="utf-8")
    data = yaml.safe_load(path.read_text())
    data["promote"] = {"config": "aiestack.toml"}
    spec = parse_flywheel(data, base_dir=tmp_path)
    trained: list[dict[str, Any]] = []

    def fake_sft(ref: str, **kw: Any) -> FinetuneResult:
        trained.append({"ref": ref, **kw})
        out = Path(kw["output_dir"])
        out.mkdir(parents=True)
        (out / "adapter.gguf").write_bytes(b"GGUF")
        return FinetuneResult("sft", out, out / "adapter", out / "adapter.gguf", {"steps": 5, "losses": [2.0, 0.5]})

    seen: list[Any] = []

    @asynccontextmanager
    async def variant(changes: Any) -> Any:  # the real one builds [models.shout-sft] with llama.cpp; here a fake serves it
        seen.append(changes)
        routes = {**s.settings.routes, "shout": {**s.settings.routes["shout"], **changes["routes"]["shout"]}}
        entries = [ModelEntry("obedient", model, "obedient"), ModelEntry("shout-sft", _Upper(), "shout-sft")]
        async with open_stack(s.settings.model_copy(update={"routes": routes}), store=_Borrowed(lambda: s.store), models=entries) as other:  # type: ignore[arg-type]
            async def evaluate(suite: Any, examples: Any) -> Any:
                return await EvalRunner(other.chat, s.store, prompts=s.prompts).run(suite, examples)  # type: ignore[arg-type]

            yield evaluate

    tools = _tools(s, model, [])
    tools.train, tools.variant, tools.workdir = {"sft": fake_sft}, variant, tmp_path / "runs"
    record = await Flywheel(tools).run(spec)
    assert record.outcome == "promoted", record.detail
    assert trained[0]["ref"] == "shouts@2" and trained[0]["model"] == "embedded" and trained[0]["options"].max_steps == 5
    gguf = str(tmp_path / "runs" / record.run_id / "shout-sft" / "adapter.gguf")
    assert seen == [{"routes": {"shout": {"deployments": [{"model": "shout-sft"}]}},
                     "models": {"shout-sft": {"provider": "llama_cpp", "lora": gguf}}}]
    config_now = tomllib.loads(config.read_text())
    assert config_now["models"] == {"shout-sft": {"provider": "llama_cpp", "lora": gguf}}
    assert config_now["routes"]["shout"]["deployments"] == [{"model": "obedient", "weight": 3}, {"model": "shout-sft", "weight": 1.0}]
    assert "for 25% of its traffic beside obedient" in record.detail


@pytest.mark.parametrize(("base", "path"), [("embedded", None), ("gemma-3-270m", None), ("Gemma3-270M", None),
                                            ("/models/base.gguf", "/models/base.gguf")])
def test_the_served_table_names_a_base_path_only_for_a_base_that_is_not_the_embedded_model(
    base: str, path: str | None, tmp_path: Path
) -> None:
    from aiestack.flywheel.steps import served_model_table

    table = served_model_table(base, tmp_path / "adapter.gguf")
    assert table["provider"] == "llama_cpp" and table["lora"] == str((tmp_path / "adapter.gguf").resolve())
    assert table.get("path") == path
