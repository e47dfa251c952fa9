"""The Python samples of the core documentation are whole scripts: each one compiles as a file.

A user copies a sample into a file and runs it; a sample that only works typed into an asyncio REPL
(``await`` or ``async with`` at the top level) fails there with a SyntaxError.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from aiestack.gateway.routes import build_route_table
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry, ModelRegistry

pytestmark = pytest.mark.unit

DOCS = Path(__file__).parents[1] / "docs"
CORE = ("getting-started.md", "rag.md", "guardrails.md", "prompts.md", "feedback.md")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


def samples(name: str) -> list[tuple[int, str]]:
    text = (DOCS / name).read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


@pytest.mark.parametrize("name", CORE)
def test_every_python_sample_is_a_script(name: str) -> None:
    found = samples(name)
    assert found, f"{name} has no Python sample"
    for line, code in found:
        try:
            compile(code, f"{name}:{line}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"docs/{name}, the sample at line {line}: {exc.msg} (wrap it in async def main() + asyncio.run)")
        undefined = _undefined_names(code)
        assert not undefined, f"docs/{name}, the sample at line {line} uses names it never defines: {undefined}"


def _undefined_names(code: str) -> list[str]:
    """The names a script reads without defining or importing them (ruff's F821)."""
    pytest.importorskip("ruff")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F821", "--output-format", "concise", "--stdin-filename", "sample.py", "-"],
        input=code, capture_output=True, text=True, check=False,
    )
    return re.findall(r"Undefined name `(\w+)`", result.stdout)


@pytest.mark.parametrize(
    ("name", "section", "route"),
    [("caching.md", "## Configuration", "support"), ("guardrails.md", "## Configuration", "support")],
)
def test_a_configuration_sample_is_a_valid_configuration(
    name: str, section: str, route: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiestack.settings import load_settings

    text = (DOCS / name).read_text(encoding="utf-8")
    block = TOML_BLOCK.search(text[text.index(section) :])
    assert block is not None
    (tmp_path / "aiestack.toml").write_text(block.group(1), encoding="utf-8")
    monkeypatch.setenv("AIESTACK_CONFIG", str(tmp_path / "aiestack.toml"))
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    # The embedded model, and the API model the samples name (configured as providers.md shows).
    models = ModelRegistry([ModelEntry(m, FakeModel(), m) for m in ("gemma-3-270m", "gpt-4o-mini")])
    assert route in build_route_table(settings.routes, models)
