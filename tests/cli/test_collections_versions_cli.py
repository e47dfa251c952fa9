"""``aiestack collections versions|switch`` on the configured (SQLite) document store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aiestack.build import build_documents
from aiestack.cli import build_app
from aiestack.settings import load_settings
from aiestack.testing.documents import DIM, fill

pytestmark = pytest.mark.unit


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


def test_versions_and_switch(fake_config: Path) -> None:
    store = build_documents(load_settings())
    try:
        fill(store)
        store.create_collection(
            "docs.v2", embedding_model="tuned", dim=DIM, metadata={"version_of": "docs", "version": 2, "lineage": {"dataset": "qa@1"}}
        )
    finally:
        store.close()
    listed = run("collections", "versions", "docs", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["version"], r["collection"], r["current"]) for r in rows] == [(1, "docs", True), (2, "docs.v2", False)]
    assert rows[1]["lineage"] == {"dataset": "qa@1"}

    switched = run("collections", "switch", "docs", "2")
    assert switched.exit_code == 0, switched.output
    assert "docs → version 2 (docs.v2, embedded by tuned)" in switched.output
    table = run("collections", "versions", "docs")
    assert table.exit_code == 0 and "docs.v2" in table.output
    assert [r["current"] for r in json.loads(run("collections", "versions", "docs", "--json").output)] == [False, True]

    missing = run("collections", "switch", "docs", "9")
    assert missing.exit_code != 0 and "no version 9" in (missing.output + str(missing.exception))
    assert run("collections", "switch", "docs", "1").exit_code == 0
    store = build_documents(load_settings())
    try:
        assert store.pointers() == {}
    finally:
        store.close()
