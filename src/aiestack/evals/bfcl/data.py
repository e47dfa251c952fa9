"""BFCL v4's question and possible-answer files: where they are, how they are read, how they get there.

The data is the Berkeley Function Calling Leaderboard's, shipped in the ``bfcl-eval`` wheel on PyPI
(Apache-2.0, Gorilla LLM). aiestack never downloads it at run time. It reads the JSON files from the
first of these that holds them:

1. ``--data DIR`` (``data_dir=``);
2. ``$AIESTACK_BFCL_DATA``;
3. ``$XDG_DATA_HOME/aiestack/bfcl`` (default ``~/.local/share/aiestack/bfcl``), where
   :func:`import_wheel` puts them (``aiestack eval bfcl --import-wheel bfcl_eval-*.whl``, or
   ``scripts/setup`` with the ``bfcl`` extra, which downloads the wheel with pip and imports it);
4. the ``data/`` folder of an installed ``bfcl_eval`` package (found, never imported).

Its dependencies pin versions (numpy 1.26, tree-sitter 0.21, ...) that an aiestack environment may not
share, so importing the data from the wheel file is the way that changes no installed package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError

#: The single-turn categories aiestack scores (AST matching, or call / no call).
CATEGORIES: tuple[str, ...] = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
#: Categories scored on whether a call is made at all (they have no possible-answer file).
NO_ANSWER = ("irrelevance", "live_irrelevance", "live_relevance")
ENV = "AIESTACK_BFCL_DATA"
WHEEL_VERSION = "2026.3.23"  # the bfcl-eval release scripts/setup imports
_PREFIX = "bfcl_eval/data/"


@dataclass(frozen=True, slots=True)
class Entry:
    """One BFCL question: its messages, the functions offered and the possible answers."""

    id: str
    category: str
    messages: tuple[Mapping[str, Any], ...]
    functions: tuple[Mapping[str, Any], ...]
    answers: tuple[Mapping[str, Mapping[str, Sequence[Any]]], ...] = ()


def default_dir() -> Path:
    """Where :func:`import_wheel` puts the data unless told otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aiestack" / "bfcl"


def _question_file(folder: Path, category: str) -> Path:
    return folder / f"BFCL_v4_{category}.json"


def _answer_file(folder: Path, category: str) -> Path:
    return folder / "possible_answer" / f"BFCL_v4_{category}.json"


def _complete(folder: Path) -> bool:
    return all(_question_file(folder, c).is_file() for c in CATEGORIES) and all(
        _answer_file(folder, c).is_file() for c in CATEGORIES if c not in NO_ANSWER
    )


def find_data(data_dir: Path | None = None) -> Path:
    """The folder holding the BFCL files; a ConfigError says how to get them when none does."""
    if data_dir is not None:
        folder = data_dir.expanduser()
        if not _complete(folder):
            raise ConfigError("--data", f"{folder} does not hold the BFCL v4 files", "point it at a folder made by --import-wheel")
        return folder
    candidates = [Path(p).expanduser() for p in [os.environ.get(ENV)] if p] + [default_dir()]
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    for folder in candidates:
        if _complete(folder):
            return folder
    raise ConfigError(
        "bfcl data",
        "the BFCL v4 data is not here (aiestack never downloads it at run time)",
        f"run `pip download bfcl-eval=={WHEEL_VERSION} --no-deps -d /tmp/bfcl` and "
        "`aiestack eval bfcl --import-wheel /tmp/bfcl/bfcl_eval-*.whl` (or ./scripts/setup local,bfcl), "
        f"or set {ENV} to a folder holding BFCL_v4_*.json and possible_answer/",
    )


def import_wheel(wheel: Path, dest: Path | None = None) -> Path:
    """Copy the question and possible-answer files of :data:`CATEGORIES` out of a ``bfcl-eval`` wheel.

    Written to a temporary folder and moved into place, so an interrupted import leaves nothing half-done.
    """
    dest = (dest or default_dir()).expanduser()
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError("--import-wheel", f"{wheel} is not a readable wheel ({exc})", "download it with pip download bfcl-eval --no-deps") from None
    names = set(archive.namelist())
    wanted = [f"{_PREFIX}BFCL_v4_{c}.json" for c in CATEGORIES]
    wanted += [f"{_PREFIX}possible_answer/BFCL_v4_{c}.json" for c in CATEGORIES if c not in NO_ANSWER]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ConfigError("--import-wheel", f"{wheel.name} lacks {missing[0]} (and {len(missing) - 1} more)", "use a bfcl-eval wheel of BFCL v4")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bfcl-", dir=dest.parent))
    try:
        for name in wanted:
            target = staging / name.removeprefix(_PREFIX)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
        (staging / "SOURCE.md").write_text(
            f"BFCL v4 data from {wheel.name} (PyPI bfcl-eval, Apache-2.0, Gorilla LLM / UC Berkeley).\n", encoding="utf-8"
        )
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return dest


def _lines(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load(category: str, folder: Path, *, limit: int | None = None) -> list[Entry]:
    """The entries of ``category`` (the first ``limit``), each with its possible answers."""
    if category not in CATEGORIES:
        raise ConfigError("--category", f"unknown or unsupported category {category!r}", f"use one of {', '.join(CATEGORIES)}")
    questions = _lines(_question_file(folder, category))[:limit]
    answers: dict[str, Any] = {}
    if category not in NO_ANSWER:
        answers = {a["id"]: a["ground_truth"] for a in _lines(_answer_file(folder, category))}
    return [
        Entry(
            id=q["id"],
            category=category,
            messages=tuple(q["question"][0]),
            functions=tuple(q["function"]),
            answers=tuple(answers.get(q["id"], ())),
        )
        for q in questions
    ]
