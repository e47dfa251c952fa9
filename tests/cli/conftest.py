from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean directory with no AIESTACK_* settings leaking in, data kept inside it."""
    for key in list(os.environ):
        if key.startswith("AIESTACK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path


@pytest.fixture
def fake_config(workdir: Path) -> Path:
    cfg = workdir / "aiestack.toml"
    cfg.write_text(
        'default_model = "echo"\nembedded_model = false\n[models.echo]\nprovider = "fake"\n', encoding="utf-8"
    )
    return cfg
