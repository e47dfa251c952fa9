"""The Python samples of the core documentation are whole scripts: each one compiles as a file.

A user copies a sample into a file and runs it; a sample that only works typed into an asyncio REPL
(``await`` or ``async with`` at the top level) fails there with a SyntaxError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOCS = Path(__file__).parents[1] / "docs"
CORE = ("getting-started.md", "rag.md")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


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
