"""Configured model names → the provider that serves each and the upstream model id."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aiestack.errors import ModelNotFound
from aiestack.models.base import ChatModel


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str  # what a request names
    provider: ChatModel
    upstream: str  # what the provider is asked for
    local: bool = False  # runs on this machine: costs nothing


class ModelRegistry:
    def __init__(self, entries: Iterable[ModelEntry] = ()) -> None:
        self._entries: dict[str, ModelEntry] = {}
        for e in entries:
            self.add(e)

    def add(self, entry: ModelEntry) -> None:
        if entry.name in self._entries:
            raise ValueError(f"model {entry.name!r} is registered twice")
        self._entries[entry.name] = entry

    def resolve(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"Did you mean '{close[0]}'? " if close else ""
            raise ModelNotFound(
                f"The model '{name}' does not exist.",
                hint=f"{hint}Configured models: {', '.join(known) or 'none'}. Add it under [models] in aiestack.toml.",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        seen: set[int] = set()
        for e in self._entries.values():
            if id(e.provider) not in seen:
                seen.add(id(e.provider))
                await e.provider.aclose()
