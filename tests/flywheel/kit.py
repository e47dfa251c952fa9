"""A model that follows its system prompt in a known way, and a stack on it, for the flywheel's tests.

``Obedient`` answers the user's words in upper case when its system prompt says ``UPPERCASE`` or
shows at least two ``Input: x / Output: X`` demonstrations in upper case (or earlier user/assistant
turns that do: dynamic in-context learning); otherwise it repeats them
as they are. So the right prompt is known: a rewrite asking for upper case, or an example set, wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiestack.build import Stack, open_stack
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner, RunResult
from aiestack.evals.suite import Suite, parse_suite
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.types import ChatRequest, Example, last_user_text

WORDS = ["apple pie", "blue sky", "cold tea", "dark road", "east wind", "fast car", "gold ring", "high hill",
         "iron gate", "jade box", "kind word", "late bus"]
_DEMO = re.compile(r"Input: (.+)\nOutput: (.+)")


class Obedient(FakeModel):
    def _next(self, request: ChatRequest) -> Script:
        if self._queue:
            return self._queue.popleft()
        system = "\n".join(m.text for m in request.messages if m.role == "system")
        text = last_user_text(request.messages)
        demos = [(q, a) for q, a in _DEMO.findall(system) if a.strip() == q.strip().upper()]
        turns = [m for m in request.messages if m.role in ("user", "assistant")][:-1]  # shown examples (DICL)
        demos += [(u.text, a.text) for u, a in zip(turns[::2], turns[1::2], strict=False) if a.text == u.text.upper()]
        if "UPPERCASE" in system or len(demos) >= 2:
            text = text.upper()
        return Script(pieces=[text])


def write_suite(folder: Path, *, n: int = 12, gates: str = "", name: str = "shout-dev") -> Path:
    rows = [{"id": f"d{i}", "q": WORDS[i % len(WORDS)], "a": WORDS[i % len(WORDS)].upper()} for i in range(n)]
    (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ndescription: Repeat the words in upper case.\n"
        f"dataset: {{path: {name}.jsonl, id: id, input: q, reference: a}}\n"
        "systems: [{name: shout, model: obedient, prompt_ref: shout@production}]\n"
        "metrics: [{name: exact_match}]\n" + gates,
        encoding="utf-8",
    )
    return path


def load(path: Path) -> tuple[Suite, list[Example]]:
    import yaml

    suite = parse_suite(yaml.safe_load(path.read_text()), base_dir=path.parent)
    return suite, load_examples(suite.dataset, suite.dataset_path)


@asynccontextmanager
async def obedient_stack(tmp_path: Path, **extra: Any) -> AsyncIterator[tuple[Stack, Obedient]]:
    model = Obedient()
    settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="fake",
                        models={"fake": {"provider": "fake"}}, **extra)
    async with open_stack(settings, models=[ModelEntry(name="obedient", provider=model, upstream="obedient")]) as stack:
        yield stack, model


def evaluator(stack: Stack) -> Any:
    """The eval harness over ``stack`` (no eval cache: every candidate's calls are made)."""

    async def evaluate(suite: Suite, examples: list[Example]) -> RunResult:
        runner = EvalRunner(stack.chat, stack.store, prompts=stack.prompts, judge=stack.side_calls.caller("eval.judge"))  # type: ignore[arg-type]
        return await runner.run(suite, examples)

    return evaluate
