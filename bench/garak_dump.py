"""Write garak's shipped probe prompts to a JSONL file (run by garak's own interpreter, not aiestack's).

garak pins transformers, torch and ~40 other packages that conflict with aiestack's environment, so it
lives in a virtual environment of its own; this script imports nothing but garak. One line per prompt:
``{"module", "probe", "active", "goal", "prompt"}``. Used by ``bench/garak_compare.py`` (see there for
the set-up); the prompts are garak's (Apache-2.0, and each data file's own source): they are read from
the installed package and never copied into this repository.

    /tmp/garak-venv/bin/python bench/garak_dump.py OUT.jsonl dan,promptinject,latentinjection,...
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from typing import Any, TextIO


def main(path: str, modules: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from garak import _config

    _config.load_base_config()
    with open(path, "w", encoding="utf-8") as out:
        for name in modules:
            dump(_config, name, out)


def _text(prompt: Any) -> str | None:
    """The last turn's text of a garak prompt (a string, or a Conversation of Turns)."""
    if isinstance(prompt, str):
        return prompt
    turns = getattr(prompt, "turns", None)
    if turns:
        content = getattr(turns[-1], "content", None)
        text = getattr(content, "text", None)
        if isinstance(text, str):
            return text
    text = getattr(prompt, "text", None)
    return text if isinstance(text, str) else None


def dump(config: Any, module_name: str, out: TextIO) -> None:
    from garak.probes.base import Probe

    module = importlib.import_module(f"garak.probes.{module_name}")
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if not issubclass(cls, Probe) or cls.__module__ != module.__name__ or name.startswith("_"):
            continue
        try:
            probe = cls(config_root=config)
        except Exception as exc:  # a probe that needs a model, a service or the network
            print(f"skip {module_name}.{name}: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
            continue
        count = 0
        for prompt in getattr(probe, "prompts", None) or []:
            text = _text(prompt)
            if text:
                row = {"module": module_name, "probe": name, "active": bool(getattr(cls, "active", True)),
                       "goal": str(getattr(cls, "goal", "")), "prompt": text}
                out.write(json.dumps(row) + "\n")
                count += 1
        print(f"{module_name}.{name}: {count} prompts", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
