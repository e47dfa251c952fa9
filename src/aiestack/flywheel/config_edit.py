"""Changing one table of a route in aiestack.toml, safely: the flywheel's route promotions.

The file is edited as text, so its comments and layout stay; the edit is accepted only if the new
file parses (``tomllib``) to exactly the old configuration with that one table changed — otherwise
nothing is written and the error gives the TOML to paste by hand. The file is replaced atomically.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def _header(*parts: str) -> re.Pattern[str]:
    names = r"\s*\.\s*".join(rf"(?:{re.escape(p)}|\"{re.escape(p)}\")" for p in parts)
    return re.compile(rf"^\s*\[\s*{names}\s*\]\s*(?:#.*)?$")


def _section_end(lines: list[str], start: int) -> int:
    """The index of the first table header after ``start`` (or the end)."""
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            return i
    return len(lines)


def _edits(text: str, route: str, key: str, table: Mapping[str, Any]) -> Iterator[str]:
    lines = text.splitlines()
    body = [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]
    own = next((i for i, line in enumerate(lines) if _header("routes", route, key).match(line)), None)
    if own is not None:  # [routes.R.key] exists: replace its body
        end = _section_end(lines, own)
        while end > own + 1 and not lines[end - 1].strip():
            end -= 1
        yield "\n".join([*lines[: own + 1], *body, *lines[end:]]) + "\n"
    parent = next((i for i, line in enumerate(lines) if _header("routes", route).match(line)), None)
    if parent is not None:  # key = ... inside [routes.R]: replace that line, else add one after the header
        end = _section_end(lines, parent)
        assign = re.compile(rf"^\s*{re.escape(_key(key))}\s*=")
        at = next((i for i in range(parent + 1, end) if assign.match(lines[i])), None)
        line = f"{_key(key)} = {toml_value(dict(table))}"
        if at is not None:
            yield "\n".join([*lines[:at], line, *lines[at + 1 :]]) + "\n"
        else:
            yield "\n".join([*lines[: parent + 1], line, *lines[parent + 1 :]]) + "\n"
    yield text.rstrip("\n") + f"\n\n[routes.{_key(route)}.{_key(key)}]\n" + "\n".join(body) + "\n"


def set_route_table(path: Path, route: str, key: str, table: Mapping[str, Any]) -> Any:
    """Set ``[routes.ROUTE.KEY]`` to ``table`` in the TOML file ``path``; return what it was (``None``: absent)."""
    try:
        text = path.read_text(encoding="utf-8")
        config = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the configuration: {exc.strerror}", "point promote.config at aiestack.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}", "fix the file first") from None
    routes = config.get("routes")
    if not isinstance(routes, dict) or not isinstance(routes.get(route), dict):
        raise ConfigError(f"routes.{route}", f"{path} declares no route {route!r}", f"add [routes.{route}] to {path}")
    before = routes[route].get(key)
    expected = copy.deepcopy(config)
    expected["routes"][route][key] = json.loads(json.dumps(dict(table)))
    for edited in _edits(text, route, key, table):
        try:
            if tomllib.loads(edited) != expected:
                continue
        except tomllib.TOMLDecodeError:
            continue
        _write(path, edited)
        return before
    snippet = f"[routes.{route}.{key}]\n" + "\n".join(f"{_key(k)} = {toml_value(v)}" for k, v in table.items())
    raise ConfigError(f"routes.{route}.{key}", f"{path} could not be changed without touching anything else",
                      f"set it by hand:\n{snippet}")


def _write(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(prefix=".aiestack-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
