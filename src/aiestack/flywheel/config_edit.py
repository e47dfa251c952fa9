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


def _edits(text: str, keys: tuple[str, ...], value: Any) -> Iterator[str]:
    """Candidate edits setting ``keys`` (a dotted path) to ``value``, most local first."""
    lines = text.splitlines()
    *parents, key = keys
    if isinstance(value, Mapping):
        body = [f"{_key(k)} = {toml_value(v)}" for k, v in value.items()]
        own = next((i for i, line in enumerate(lines) if _header(*keys).match(line)), None)
        if own is not None:  # [a.b.key] exists: replace its body
            end = _section_end(lines, own)
            while end > own + 1 and not lines[end - 1].strip():
                end -= 1
            yield "\n".join([*lines[: own + 1], *body, *lines[end:]]) + "\n"
    parent = next((i for i, line in enumerate(lines) if _header(*parents).match(line)), None) if parents else None
    if parent is not None:  # key = ... inside [a.b]: replace that line, else add one after the header
        end = _section_end(lines, parent)
        assign = re.compile(rf"^\s*{re.escape(_key(key))}\s*=")
        at = next((i for i in range(parent + 1, end) if assign.match(lines[i])), None)
        line = f"{_key(key)} = {toml_value(value)}"
        if at is not None:
            yield "\n".join([*lines[:at], line, *lines[at + 1 :]]) + "\n"
        else:
            yield "\n".join([*lines[: parent + 1], line, *lines[parent + 1 :]]) + "\n"
    if isinstance(value, Mapping):
        yield text.rstrip("\n") + f"\n\n[{'.'.join(_key(k) for k in keys)}]\n" + "\n".join(body) + "\n"
    elif parents:
        yield text.rstrip("\n") + f"\n\n[{'.'.join(_key(k) for k in parents)}]\n{_key(key)} = {toml_value(value)}\n"


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the configuration: {exc.strerror}", "point promote.config at aiestack.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}", "fix the file first") from None


def read_value(path: Path, keys: tuple[str, ...]) -> Any:
    """The value at the dotted key ``keys`` of the TOML file ``path`` (``None``: absent)."""
    node: Any = _read(path)[1]
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def set_value(path: Path, keys: tuple[str, ...], value: Any) -> Any:
    """Set the dotted key ``keys`` to ``value`` (a table, list or scalar) in the TOML file ``path``; return
    what it was (``None``: absent). Written only if the result means exactly that change."""
    text, config = _read(path)
    return _apply(path, text, config, [(keys, value)])[0]


def set_values(path: Path, changes: list[tuple[tuple[str, ...], Any]]) -> list[Any]:
    """Several :func:`set_value` changes, written together (all or none)."""
    text, config = _read(path)
    return _apply(path, text, config, changes)


def _apply(path: Path, text: str, config: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]]) -> list[Any]:
    before: list[Any] = []
    for keys, value in changes:
        node: Any = config
        for k in keys[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        before.append(copy.deepcopy(node.get(keys[-1])) if isinstance(node, dict) else None)
        expected = copy.deepcopy(config)
        target = expected
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = json.loads(json.dumps(value))
        for edited in _edits(text, keys, value):
            try:
                if tomllib.loads(edited) != expected:
                    continue
            except tomllib.TOMLDecodeError:
                continue
            text, config = edited, expected
            break
        else:
            shown = (f"[{'.'.join(keys)}]\n" + "\n".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items())
                     if isinstance(value, Mapping) else f"[{'.'.join(keys[:-1])}]\n{_key(keys[-1])} = {toml_value(value)}")
            raise ConfigError(".".join(keys), f"{path} could not be changed without touching anything else",
                              f"set it by hand:\n{shown}")
    _write(path, text)
    return before


def set_route_table(path: Path, route: str, key: str, table: Mapping[str, Any]) -> Any:
    """Set ``[routes.ROUTE.KEY]`` to ``table`` in the TOML file ``path``; return what it was (``None``: absent)."""
    _, config = _read(path)
    routes = config.get("routes")
    if not isinstance(routes, dict) or not isinstance(routes.get(route), dict):
        raise ConfigError(f"routes.{route}", f"{path} declares no route {route!r}", f"add [routes.{route}] to {path}")
    return set_value(path, ("routes", route, key), dict(table))


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
