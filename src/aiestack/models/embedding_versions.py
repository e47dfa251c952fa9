"""Embedding model versions: finetuned sentence-transformers models kept in the data directory.

``aiestack finetune embeddings`` trains a model and registers it here as a *version*: its weights in
``<data_dir>/embedding-models/<id>/model/`` (sentence-transformers layout) and its record in
``<data_dir>/embedding-models/<id>/version.json``::

    {"id": "all-MiniLM-L6-v2-ft-1a2b3c4d", "base_model": "all-MiniLM-L6-v2", "created_at": 1765050000.0,
     "dataset": "scifact-train@1", "collection": "docs", "params": {...}, "metrics": {...}, "lineage": {...}}

The id is the name a collection records as its ``embedding_model`` once re-indexed with the version,
and what the stack opens to embed that collection's queries and new documents
(:meth:`aiestack.resources.Resources.embeddings_for`). It ends with 8 hex digits of the sha256 of the
lineage (base model, dataset, parameters, time), so two trainings never share an id.

A version directory is complete or absent: the weights are written to a temporary directory beside
it and renamed into place with the record, so a crash mid-save leaves no half version behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiestack.errors import InvalidRequest, NotFound
from aiestack.models.base import EmbeddingModel

#: Under the data directory.
FOLDER = "embedding-models"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True, slots=True)
class EmbeddingVersion:
    """One registered embedding model: where its weights are and how it was made."""

    id: str
    base_model: str
    path: Path  # the sentence-transformers model directory
    created_at: float
    dataset: str = ""  # the dataset version it was trained on, "name@version"
    collection: str = ""  # the collection its hard negatives came from
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What ``version.json`` holds (the path is implied by where it lies)."""
        return {
            "id": self.id,
            "base_model": self.base_model,
            "created_at": self.created_at,
            "dataset": self.dataset,
            "collection": self.collection,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "lineage": dict(self.lineage),
        }


def version_id(base_model: str, lineage: Mapping[str, Any]) -> str:
    """``<base name>-ft-<8 hex digits of the lineage's hash>``."""
    digest = hashlib.sha256(json.dumps(lineage, sort_keys=True, default=str).encode()).hexdigest()[:8]
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "-", Path(base_model.rstrip("/")).name).strip("-.") or "model"
    return f"{base[:100]}-ft-{digest}"


class EmbeddingVersions:
    """The registered versions under ``root`` (``<data_dir>/embedding-models``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> EmbeddingVersions:
        return cls(Path(data_dir).expanduser() / FOLDER)

    def register(
        self,
        model_dir: Path,
        *,
        base_model: str,
        dataset: str = "",
        collection: str = "",
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
        created_at: float | None = None,
    ) -> EmbeddingVersion:
        """Move the trained model in ``model_dir`` into the registry as a new version; return it."""
        model_dir = Path(model_dir)
        if not (model_dir / "modules.json").is_file():
            raise InvalidRequest(
                f"{model_dir} is not a sentence-transformers model directory (no modules.json).",
                hint="Register what SentenceTransformer.save() wrote.",
            )
        when = time.time() if created_at is None else created_at
        full = {"base_model": base_model, "dataset": dataset, "collection": collection, "params": dict(params or {}),
                "created_at": when, **dict(lineage or {})}
        vid = version_id(base_model, full)
        version = EmbeddingVersion(
            id=vid,
            base_model=base_model,
            path=self.root / vid / "model",
            created_at=when,
            dataset=dataset,
            collection=collection,
            params=dict(params or {}),
            metrics=dict(metrics or {}),
            lineage=dict(lineage or {}),
        )
        final = self.root / version.id
        if final.exists():
            raise InvalidRequest(f"The embedding version {version.id} is already registered.", hint="Train again.")
        staging = self.root / f".{version.id}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.move(str(model_dir), staging / "model")
        (staging / "version.json").write_text(json.dumps(version.record(), indent=2), encoding="utf-8")
        staging.rename(final)
        return self._load(final)

    def set_metrics(self, id: str, metrics: Mapping[str, Any]) -> EmbeddingVersion:
        """Record evaluation figures on a version (merged into what it has)."""
        version = self.require(id)
        record = version.record()
        record["metrics"] = {**record["metrics"], **dict(metrics)}
        target = self.root / id / "version.json"
        staging = target.with_suffix(".json.tmp")
        staging.write_text(json.dumps(record, indent=2), encoding="utf-8")
        staging.replace(target)
        return self.require(id)

    def get(self, id: str) -> EmbeddingVersion | None:
        if not _ID.fullmatch(id or "") or ".." in id:
            return None
        folder = self.root / id
        return self._load(folder) if (folder / "version.json").is_file() else None

    def require(self, id: str) -> EmbeddingVersion:
        found = self.get(id)
        if found is None:
            known = ", ".join(v.id for v in self.list()) or "none yet"
            raise NotFound(
                f"There is no embedding model version {id!r} in {self.root} (versions: {known}).",
                hint="Train one with `aiestack finetune embeddings`; list them with `aiestack finetune embedding-models`.",
            )
        return found

    def list(self) -> list[EmbeddingVersion]:
        """Every version, oldest first."""
        if not self.root.is_dir():
            return []
        found = [self._load(p) for p in self.root.iterdir() if not p.name.startswith(".") and (p / "version.json").is_file()]
        return sorted(found, key=lambda v: (v.created_at, v.id))

    def open(self, id: str, *, batch_size: int = 64, threads: int = 0) -> EmbeddingModel:
        """The version as an embedding model named by its id (weights load on first use)."""
        from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

        version = self.require(id)
        return SentenceTransformerEmbeddings(str(version.path), name=version.id, batch_size=batch_size, threads=threads)

    @staticmethod
    def _load(folder: Path) -> EmbeddingVersion:
        record = json.loads((folder / "version.json").read_text(encoding="utf-8"))
        return EmbeddingVersion(
            id=str(record["id"]),
            base_model=str(record.get("base_model", "")),
            path=folder / "model",
            created_at=float(record.get("created_at", 0.0)),
            dataset=str(record.get("dataset", "")),
            collection=str(record.get("collection", "")),
            params=record.get("params") or {},
            metrics=record.get("metrics") or {},
            lineage=record.get("lineage") or {},
        )
