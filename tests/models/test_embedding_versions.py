"""The registry of embedding model versions in the data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.errors import InvalidRequest, NotFound
from aiestack.models.embedding_versions import EmbeddingVersions, version_id

pytestmark = pytest.mark.unit


def _model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "modules.json").write_text("[]", encoding="utf-8")
    (path / "weights.bin").write_bytes(b"\0" * 8)
    return path


def test_register_list_metrics_and_lookup(tmp_path: Path) -> None:
    registry = EmbeddingVersions(tmp_path / "embedding-models")
    assert registry.list() == [] and registry.get("nope") is None
    one = registry.register(_model(tmp_path / "a"), base_model="all-MiniLM-L6-v2", dataset="qa@1", collection="docs",
                            params={"lr": 2e-5}, lineage={"steps": 3}, created_at=10.0)
    two = registry.register(_model(tmp_path / "b"), base_model="/models/e5-small/", dataset="qa@2", created_at=20.0)
    assert one.id.startswith("all-MiniLM-L6-v2-ft-") and two.id.startswith("e5-small-ft-") and one.id != two.id
    assert not (tmp_path / "a").exists() and (one.path / "weights.bin").is_file()  # moved in
    assert [v.id for v in registry.list()] == [one.id, two.id]
    record = json.loads((one.path.parent / "version.json").read_text())
    assert record["dataset"] == "qa@1" and record["params"] == {"lr": 2e-5} and record["lineage"] == {"steps": 3}
    updated = registry.set_metrics(one.id, {"after": {"hybrid": {"ndcg@10": 0.7}}})
    assert updated.metrics == {"after": {"hybrid": {"ndcg@10": 0.7}}} and updated.dataset == "qa@1"
    assert registry.get("../" + one.id) is None
    with pytest.raises(NotFound, match="no embedding model version"):
        registry.require("missing")
    with pytest.raises(InvalidRequest, match="not a sentence-transformers model"):
        registry.register(tmp_path, base_model="x")
    assert not any(p.name.startswith(".") for p in registry.root.iterdir())  # no staging left behind


def test_ids_hash_the_lineage() -> None:
    assert version_id("all-MiniLM-L6-v2", {"a": 1}) == version_id("all-MiniLM-L6-v2", {"a": 1})
    assert version_id("all-MiniLM-L6-v2", {"a": 1}) != version_id("all-MiniLM-L6-v2", {"a": 2})
