"""An embedding candidate: finetune (faked: a better model), re-index into a new collection version,
gate on the held-out questions per question, and switch the collection only when the gate passes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from aiestack.context.versions import reindex_collection
from aiestack.flywheel.runner import Flywheel, FlywheelTools
from aiestack.flywheel.spec import load_flywheel
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import Chunk, Document

pytestmark = pytest.mark.unit
WORDS = ["mercury", "honey", "moon", "hamlet", "tides", "sky", "penguins", "nile", "volcano", "glacier", "desert",
         "coral", "comet", "tulip", "falcon", "granite"]


class Scrambled:
    """A useless embedding model: vectors from a hash of the whole text, unrelated to its words."""

    name, dim = "scrambled", 32

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[b / 255 - 0.5 for b in hashlib.sha256(t.encode()).digest()] for t in texts]

    async def aclose(self) -> None:
        return None


async def _setup(tmp_path: Path, *, better: bool, **candidate: Any) -> tuple[FlywheelTools, MemoryDocumentStore, Path]:
    documents = MemoryDocumentStore()
    base = Scrambled()
    documents.create_collection("facts", embedding_model=base.name, dim=base.dim)
    rows = []
    for i, word in enumerate(WORDS):
        text = f"a long note about the {word} and nothing else"
        chunk = Chunk(id=f"c{i}", document_id=f"d{i}", text=text, position=0, metadata={})
        documents.put_document("facts", Document(id=f"d{i}", text=text, source=f"{word}.txt"), [chunk], await base.embed([text]))
        rows.append({"question": f"tell me about the {word}", "answer": text,
                     "sources": [{"document_id": f"d{i}", "chunk_id": f"c{i}", "text": text}]})
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    tuned = BagOfWordsEmbeddings(dim=32) if better else Scrambled()
    tuned.name = "facts-tuned-1"  # type: ignore[misc]
    models = {"scrambled": base, "facts-tuned-1": tuned}
    calls: list[dict[str, Any]] = []

    async def fake_finetune(**kw: Any) -> Any:  # finetune_embeddings' contract, without the training
        calls.append(kw)
        reindexed = await reindex_collection(kw["documents"], kw["collection"], tuned, lineage={"dataset": kw["dataset"]})
        figures = {"vector": {"ndcg@10": 0.1}}
        dev = kw["options"].dev
        return SimpleNamespace(collection=reindexed.version, model=SimpleNamespace(id="facts-tuned-1"), base_model="scrambled",
                               eval_queries=8, train_queries=8, before=figures, after=figures,
                               vector_weight=0.55 if dev else None, dev_queries=2 if dev else 0)

    async def unused(*_: Any) -> Any:
        raise AssertionError("an embedding candidate is not evaluated on a suite")

    tools = FlywheelTools(store=MemoryExchangeStore(), prompts=None, evaluate=unused, documents=documents,
                          embeddings_for=models.__getitem__, embedding_versions=object(), finetune_embeddings=fake_finetune)
    spec = {"name": "facts", "dataset": {"name": "facts-qa", "from": "file", "path": "qa.jsonl"},
            "candidate": {"kind": "embedding", "collection": "facts", "holdout": 0.5, "mode": "vector", **candidate},
            "evaluate": {"min_gain": 0.0}}
    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    tools.routes = {"calls": calls}  # type: ignore[dict-item]  # kept for the test's assertions
    return tools, documents, path


async def test_a_better_model_is_switched_in(tmp_path: Path) -> None:
    tools, documents, path = await _setup(tmp_path, better=True)
    record = await Flywheel(tools).run(load_flywheel(path))
    assert record.outcome == "promoted", record.detail
    assert documents.resolve("facts") == "facts.v2" and "facts now serves version 2 (model facts-tuned-1)" in record.detail
    steps = {s.name: s for s in tools.store.flywheel_steps(record.run_id)}
    call = tools.routes["calls"][0]  # type: ignore[index]
    assert call["dataset"] == "facts-qa@1" and call["options"].holdout == 0.5 and call["options"].switch is False
    assert call["options"].dev == 0.0 and steps["candidate"].outputs["vector_weight"] is None  # no dev: the weight stays
    ev = steps["evaluate"].outputs
    assert ev["decision"]["candidate"] > ev["decision"]["baseline"] and ev["decision"]["n"] == len(ev["per_question"]["baseline"]) > 3
    assert steps["promote"].outputs["change"]["to"] == "facts.v2"


async def test_a_model_no_better_is_not_switched_in(tmp_path: Path) -> None:
    tools, documents, path = await _setup(tmp_path, better=False)
    record = await Flywheel(tools).run(load_flywheel(path))
    assert record.outcome == "refused" and "no evidence of improvement" in record.detail
    assert documents.resolve("facts") == "facts"  # still version 1


async def test_dev_questions_choose_the_weight_and_the_candidate_reports_it(tmp_path: Path) -> None:
    tools, _, path = await _setup(tmp_path, better=True, dev=0.25)
    record = await Flywheel(tools).run(load_flywheel(path))
    assert record.outcome == "promoted", record.detail
    options = tools.routes["calls"][0]["options"]  # type: ignore[index]
    assert options.dev == 0.25 and options.refit  # held out to choose the weight, then refit on all
    steps = {s.name: s for s in tools.store.flywheel_steps(record.run_id)}
    cand = steps["candidate"]
    assert cand.inputs["dev"] == 0.25 and cand.outputs["vector_weight"] == 0.55
    assert "vector weight 0.55 chosen on 2 held-out training questions" in cand.outputs["summary"]


def test_a_dev_share_must_leave_questions_to_train_on(tmp_path: Path) -> None:
    from aiestack.errors import ConfigError

    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml.safe_dump({"name": "facts", "candidate": {"kind": "embedding", "collection": "facts", "dev": 1.0},
                                    "evaluate": {}}), encoding="utf-8")
    with pytest.raises((ConfigError, ValueError), match="dev"):
        load_flywheel(path)
