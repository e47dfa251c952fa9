"""A fast CLI cold start: `aiestack --help` (and `import aiestack`) import nothing heavy.

A wall-clock assert would be flaky on a loaded machine; what makes the start slow is which modules
load, so that is what is pinned. The measured times are in bench/README.md (bench/cli_start.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

#: Modules a help screen never needs: each costs tens to hundreds of milliseconds to import.
HEAVY = (
    "aiestack.build",
    "aiestack.settings",
    "aiestack.models.builtin",
    "aiestack.models.anthropic",
    "aiestack.models.llama_cpp",
    "aiestack.gateway.keys",
    "aiestack.prompts.registry",
    "aiestack.feedback.export",
    "aiestack.pipeline",
    "asyncio",
    "pydantic",
    "pydantic_settings",
    "jinja2",
    "markdown_it",
    "pygments",
    "numpy",
    "sqlalchemy",
    "httpx",
    "aiohttp",
    "fastapi",
    "starlette",
    "uvicorn",
    "opentelemetry",
    "redis",
    "psycopg",
    "torch",
    "transformers",
    "sentence_transformers",
    "model2vec",
    "llama_cpp",
    "tantivy",
    "openai",
    "anthropic",
    "yaml",
)

_PROBE = """
import json, sys
{code}
print(json.dumps(sorted(sys.modules)))
"""


def _modules(code: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIESTACK_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(h for h in HEAVY if h in modules)


#: Typer builds a command's parameters with pydantic (typer._adapters): a command's own help pays for it.
TYPERS_OWN = {"pydantic"}


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["keys", "--help"], ["eval", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    code = f"""
from aiestack.cli import main
try:
    main({argv!r})
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""
    modules = _modules(code)
    assert "aiestack.cli.app" in modules  # the premise: the CLI was built
    allowed = TYPERS_OWN if argv != ["--help"] else set()
    assert sorted(set(_heavy(modules)) - allowed) == []


def test_import_aiestack_imports_nothing_heavy_until_a_name_is_used() -> None:
    assert _heavy(_modules("import aiestack")) == []
    used = _modules("import aiestack\naiestack.Settings")
    assert "aiestack.settings" in used and "pydantic" in used  # the lazy names still resolve
