"""``table_console``: the terminal's width on a terminal, wide when piped."""

from __future__ import annotations

import io

import pytest

from aiestack.cli.console import PIPED_WIDTH, table_console

pytestmark = pytest.mark.unit


def test_piped_output_is_drawn_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.delenv("COLUMNS", raising=False)
    console = table_console(highlight=False)
    assert not console.is_terminal and console.width == PIPED_WIDTH


def test_a_terminal_keeps_its_own_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "93")
    console = table_console(force_terminal=True)
    assert console.is_terminal and console.width == 93
