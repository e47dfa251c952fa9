"""``aiestack routes fit FILE``: fits thresholds on labelled utterances and prints them as TOML."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import aiestack.build
from aiestack.cli.app import build_app
from aiestack.testing.embeddings import BagOfWordsEmbeddings

pytestmark = pytest.mark.unit

CONFIG = """
default_model = "echo"
embedded_model = false
[models.echo]
provider = "fake"
[routes.billing]
deployments = ["echo"]
examples = ["refund my invoice payment", "why was my card charged twice"]
[routes.shipping]
deployments = ["echo"]
examples = ["where is my parcel delivery", "track my package shipment"]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("AIESTACK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(aiestack.build, "build_embeddings", lambda settings, store: BagOfWordsEmbeddings(dim=512))
    yield tmp_path


def test_routes_fit_prints_and_writes_thresholds(workdir: Path) -> None:
    (workdir / "aiestack.toml").write_text(CONFIG, encoding="utf-8")
    rows = [
        {"text": "my card was charged twice", "route": "billing", "split": "train"},
        {"text": "refund for my invoice", "route": "billing", "split": "train"},
        {"text": "where is my parcel", "route": "shipping", "split": "train"},
        {"text": "track the package", "route": "shipping", "split": "train"},
        {"text": "tell me a joke", "route": None, "split": "train"},
        {"text": "ignored line", "route": "billing", "split": "test"},
    ]
    (workdir / "labelled.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = CliRunner().invoke(
        build_app(), ["routes", "fit", "labelled.jsonl", "--split", "train", "--write", "thresholds.toml"]
    )
    assert result.exit_code == 0, result.output
    assert "accuracy on 5 utterances" in result.output and "fitted" in result.output
    written = (workdir / "thresholds.toml").read_text(encoding="utf-8")
    assert "[routes.billing]\nthreshold = " in written and "[routes.shipping]\nthreshold = " in written
    assert written.strip() in result.output


def test_routes_fit_without_examples_says_what_to_add(workdir: Path) -> None:
    (workdir / "aiestack.toml").write_text(
        'default_model = "echo"\nembedded_model = false\n[models.echo]\nprovider = "fake"\n', encoding="utf-8"
    )
    (workdir / "labelled.jsonl").write_text('{"text": "hi", "route": null}\n', encoding="utf-8")
    from aiestack.cli.app import main

    with pytest.raises(SystemExit) as raised:
        main(["routes", "fit", "labelled.jsonl"])
    assert raised.value.code == 2
