"""``aiestack finetune embeddings`` as a user runs it: ingest, a qrels dataset, finetune, switch, search."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aiestack.build import build_documents
from aiestack.cli import build_app
from aiestack.settings import load_settings
from aiestack.stores.datasets import DatasetRow
from aiestack.stores.open import open_store

FACTS = {
    "mercury.txt": ("Mercury is a silvery metal that stays liquid at room temperature.", "which metal is liquid at room temperature"),
    "bees.txt": ("Honey bees collect nectar and turn it into honey in the hive.", "what do bees make"),
    "moon.txt": ("The Moon orbits the Earth at an average distance of 384,400 kilometres.", "how far away is the moon"),
    "hamlet.txt": ("Hamlet is a tragedy written by William Shakespeare around 1600.", "who wrote hamlet"),
    "tides.txt": ("Ocean tides are caused by the gravitational pull of the Moon and the Sun.", "what causes tides"),
    "sky.txt": ("Sunlight scattered by air molecules makes the daytime sky look blue.", "why is the sky blue"),
}


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_st: Path) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("AIESTACK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "aiestack.toml").write_text(
        'default_model = "echo"\nembedded_model = false\n[models.echo]\nprovider = "fake"\n'
        f'[embeddings]\nprovider = "sentence_transformers"\nmodel = "{tiny_st}"\ncache = false\nthreads = 1\n',
        encoding="utf-8",
    )
    docs = tmp_path / "facts"
    docs.mkdir()
    for name, (text, _) in FACTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    yield tmp_path


def _push(name: str, suffix: str = "") -> None:
    documents = build_documents(load_settings())
    store = open_store(load_settings().store_url, "exchanges")
    try:
        store.migrate()
        rows = []
        for doc in documents.documents("facts"):
            (_, chunks, _), = documents.read_documents("facts", [doc.source])
            text, question = FACTS[doc.source.rsplit("/", 1)[-1]]
            rows.append(DatasetRow({"messages": [{"role": "user", "content": question + suffix}, {"role": "assistant", "content": text}],
                                    "sources": [{"document_id": doc.id, "chunk_id": chunks[0].id}]}))
        store.push_dataset(name, "chat", rows, created_at=1.0)  # type: ignore[attr-defined]
    finally:
        store.close()
        documents.close()


@pytest.mark.slow
def test_finetune_embeddings_then_switch_and_search(workdir: Path, one_thread: object) -> None:
    assert run("ingest", str(workdir / "facts"), "-c", "facts").exit_code == 0
    _push("facts-qa")
    _push("facts-asked", "?")
    missing = run("finetune", "embeddings", "facts", "--dataset", "nope")
    assert missing.exit_code != 0 and "nope" in str(missing.exception)
    bad = run("finetune", "embeddings", "facts", "--dataset", "facts-qa", "--dev", "0.3", "--weights", "0.3,much")
    assert bad.exit_code != 0 and "comma-separated numbers" in str(bad.exception)
    both = run("finetune", "embeddings", "facts", "--dataset", "facts-qa", "--dev", "0.3", "--vector-weight", "0.5")
    assert both.exit_code != 0 and "not both" in str(both.exception)

    result = run("finetune", "embeddings", "facts", "--dataset", "facts-qa", "--eval", "facts-asked", "--epochs", "12",
                 "--batch-size", "4", "--lr", "3e-3", "--mine", "vector", "--mine-depth", "4", "--mine-skip", "0",
                 "--mode", "vector", "--mode", "bm25", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["collection"], report["collection_version"], report["stored_as"], report["switched"]) == ("facts", 2, "facts.v2", False)
    assert report["after"]["vector"]["ndcg@10"] > report["before"]["vector"]["ndcg@10"]
    assert report["after"]["bm25"] == report["before"]["bm25"]  # same chunks, same term index
    assert report["eval"] == "facts-asked@1" and report["dataset"] == "facts-qa@1"
    assert (report["vector_weight"], report["dev_queries"], report["dev_ndcg@10"]) == (None, 0, {})  # no --dev

    models = json.loads(run("finetune", "embedding-models", "--json").output)
    assert [m["id"] for m in models] == [report["model"]] and models[0]["dataset"] == "facts-qa@1"
    assert models[0]["metrics"]["after"]["vector"]["ndcg@10"] == report["after"]["vector"]["ndcg@10"]

    assert run("collections", "switch", "facts", "2").exit_code == 0
    # The stack embeds the query with the collection's own (finetuned) model: the trained question finds its fact.
    found = run("search", "which metal is liquid at room temperature", "-c", "facts", "--mode", "vector", "--k", "1", "--json")
    assert found.exit_code == 0, found.output
    assert "Mercury" in json.loads(found.output.splitlines()[0])["text"]
    # New documents go into the current version, embedded by its model.
    (workdir / "more").mkdir()
    (workdir / "more" / "owls.txt").write_text("Owls hoot at night.", encoding="utf-8")
    assert run("ingest", str(workdir / "more"), "-c", "facts").exit_code == 0
    versions = json.loads(run("collections", "versions", "facts", "--json").output)
    assert [(v["documents"], v["current"]) for v in versions] == [(6, False), (7, True)]
