"""The Python samples of the core documentation are whole scripts: each one compiles as a file.

A user copies a sample into a file and runs it; a sample that only works typed into an asyncio REPL
(``await`` or ``async with`` at the top level) fails there with a SyntaxError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiestack.gateway.routes import build_route_table
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry, ModelRegistry

pytestmark = pytest.mark.unit

DOCS = Path(__file__).parents[1] / "docs"
CORE = ("getting-started.md", "rag.md")
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


def test_the_cache_configuration_sample_is_a_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiestack.settings import load_settings

    text = (DOCS / "caching.md").read_text(encoding="utf-8")
    section = text[text.index("## Configuration") :]
    (tmp_path / "aiestack.toml").write_text(TOML_BLOCK.search(section).group(1), encoding="utf-8")  # type: ignore[union-attr]
    monkeypatch.setenv("AIESTACK_CONFIG", str(tmp_path / "aiestack.toml"))
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    assert settings.cache.ttl_s == 86400
    # The embedded model's name, as `aiestack serve` would have it: the route's tables must validate.
    models = ModelRegistry([ModelEntry("gemma-3-270m", FakeModel(), "gemma-3-270m")])
    assert "support" in build_route_table(settings.routes, models)
