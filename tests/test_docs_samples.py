"""The Python samples of the documentation are whole scripts, and its TOML samples are configuration.

A user copies a sample into a file and runs it; a sample that only works typed into an asyncio REPL
(``await`` or ``async with`` at the top level) fails there with a SyntaxError, one that reads a name
it never defines fails with a NameError, and one that imports a name aiestack does not have fails
with an ImportError. Every Markdown page under docs/ and the README is checked: a new page is
covered as soon as it is added.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aiestack.gateway.routes import build_route_table
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry, ModelRegistry

if TYPE_CHECKING:
    from aiestack.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)
#: The top-level tables of a pyproject.toml (a plugin's packaging, in plugins.md): not aiestack.toml.
PYPROJECT_TABLES = {"build-system", "project", "tool"}


def blocks(pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    """(page, line, text) of every block ``pattern`` finds in the pages."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        found += [(name, text[: m.start()].count("\n") + 1, m.group(1)) for m in pattern.finditer(text)]
    return found


PYTHON_SAMPLES = blocks(PYTHON_BLOCK)
TOML_SAMPLES = blocks(TOML_BLOCK)


def test_the_pages_are_found() -> None:
    assert DOCS / "getting-started.md" in PAGES and ROOT / "README.md" in PAGES
    assert len(PYTHON_SAMPLES) > 10 and len(TOML_SAMPLES) > 10


@pytest.mark.parametrize(("page", "line", "code"), PYTHON_SAMPLES, ids=[f"{p}:{n}" for p, n, _ in PYTHON_SAMPLES])
def test_every_python_sample_is_a_script(page: str, line: int, code: str) -> None:
    try:
        compile(code, f"{page}:{line}", "exec")
    except SyntaxError as exc:
        pytest.fail(f"{page}, the sample at line {line}: {exc.msg} (wrap it in async def main() + asyncio.run)")
    undefined = _undefined_names(code)
    assert not undefined, f"{page}, the sample at line {line} uses names it never defines: {undefined}"
    missing = _missing_imports(code)
    assert not missing, f"{page}, the sample at line {line} imports what aiestack does not have: {missing}"


@pytest.mark.parametrize(("page", "line", "text"), TOML_SAMPLES, ids=[f"{p}:{n}" for p, n, _ in TOML_SAMPLES])
def test_every_toml_sample_loads_as_configuration(
    page: str, line: int, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{page}, the TOML sample at line {line} is not TOML: {exc}")
    if set(tables) <= PYPROJECT_TABLES:
        return
    _load_configuration(text, tmp_path, monkeypatch)  # a ConfigError names the key and the fix


def _undefined_names(code: str) -> list[str]:
    """The names a script reads without defining or importing them (ruff's F821)."""
    pytest.importorskip("ruff")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F821", "--output-format", "concise", "--stdin-filename", "sample.py", "-"],
        input=code, capture_output=True, text=True, check=False,
    )
    return re.findall(r"Undefined name `(\w+)`", result.stdout)


def _missing_imports(code: str) -> list[str]:
    """The ``aiestack`` modules and names a script imports that do not exist."""
    missing = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "aiestack":
            module = importlib.import_module(str(node.module))
            missing += [
                f"{node.module}.{alias.name}" for alias in node.names
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None
            ]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "aiestack"]
            missing += [name for name in names if importlib.util.find_spec(name) is None]
    return missing


@pytest.mark.parametrize(
    ("name", "section", "route"),
    [("caching.md", "## Configuration", "support"), ("guardrails.md", "## Configuration", "support")],
)
def test_a_configuration_sample_is_a_valid_configuration(
    name: str, section: str, route: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (DOCS / name).read_text(encoding="utf-8")
    block = TOML_BLOCK.search(text[text.index(section) :])
    assert block is not None
    settings = _load_configuration(block.group(1), tmp_path, monkeypatch)
    # The embedded model, and the API model the samples name (configured as providers.md shows).
    models = ModelRegistry([ModelEntry(m, FakeModel(), m) for m in ("gemma-3-270m", "gpt-4o-mini")])
    assert route in build_route_table(settings.routes, models)


def _load_configuration(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``text`` loaded as the aiestack.toml in use (with a data directory of its own)."""
    from aiestack.settings import load_settings

    (tmp_path / "aiestack.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("AIESTACK_CONFIG", str(tmp_path / "aiestack.toml"))
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    return load_settings()
