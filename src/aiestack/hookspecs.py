"""The plugin API: the hooks aiestack calls and the specs a plugin registers through them.

A plugin is a module (or object) with ``@hookimpl`` functions, shipped as a package with an
``aiestack`` entry point (``[project.entry-points.aiestack] myplugin = "my_pkg.plugin"``). Each hook
takes a ``register`` callback; the built-in providers register through the same hook
(:mod:`aiestack.models.builtin`)::

    from aiestack.hookspecs import GuardrailSpec, hookimpl

    @hookimpl
    def register_guardrails(register):
        register(GuardrailSpec("no_pirates", lambda: PirateGuard()))

What each registration does in a stack (:func:`aiestack.build.build_stack`):

- ``register_models(ProviderSpec)``: a ``provider = NAME`` for ``[models.X]`` tables.
- ``register_guardrails(GuardrailSpec)``: a stage run on every request right after the built-in
  input guard (block by raising :class:`~aiestack.errors.GuardrailBlocked`).
- ``register_retrievers(RetrieverSpec)``: one more ranked list fused into every RAG search.
- ``register_stores(StoreSpec)``: a backend for a URL scheme and a storage capability, opened by
  :func:`~aiestack.stores.open.open_store` (``store.url = "myscheme://..."``).
- ``register_tools(ToolSpec)``: a tool listed in the stack's tool registry (``stack.tools``).
- ``register_metrics(MetricSpec)``: a metric eval suites can name.
- ``register_commands(CommandSpec)``: an ``aiestack NAME`` command (a function) or group (a Typer
  app) added to the CLI (:func:`aiestack.cli.build_app`).

This module is the plugin API: its ``__all__`` is pinned by ``tests/test_plugins.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

from aiestack.stores.open import StoreFactory, StoreSpec

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel

    from aiestack.evals.base import CorpusMetric, Metric
    from aiestack.models.base import ChatModel
    from aiestack.pipeline import Stage
    from aiestack.stores.documents import Filter
    from aiestack.types import Hit, Tool

__all__ = [
    "CommandSpec",
    "GuardrailSpec",
    "Hookspecs",
    "MetricSpec",
    "PluginRetriever",
    "ProviderFactory",
    "ProviderSpec",
    "RetrieverSpec",
    "StoreFactory",
    "StoreSpec",
    "ToolSpec",
    "hookimpl",
    "hookspec",
]

hookspec = pluggy.HookspecMarker("aiestack")
hookimpl = pluggy.HookimplMarker("aiestack")

ProviderFactory = Callable[[str, Any, Mapping[str, str]], "ChatModel"]
"""(model name, validated config, environment) → provider instance."""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """How to build a provider from a ``[models.NAME]`` table whose ``provider`` is ``name``."""

    name: str
    config: type[BaseModel]
    factory: ProviderFactory
    local: bool = False  # runs on this machine (costs nothing)
    upstream: Callable[[str, Any], str] | None = None  # the upstream model id (default: cfg.model or NAME)


@dataclass(frozen=True, slots=True)
class GuardrailSpec:
    """A guard run on every request, after the built-in input guard: ``factory()`` builds its stage."""

    name: str
    factory: Callable[[], Stage]


@runtime_checkable
class PluginRetriever(Protocol):
    """A ranked list for a RAG search, fused with the term and vector lists (best first)."""

    async def search(self, collection: str, query: str, *, k: int, filter: Filter | None) -> list[Hit]: ...


@dataclass(frozen=True, slots=True)
class RetrieverSpec:
    """A retriever whose list joins every RAG search's fusion: ``factory()`` builds it."""

    name: str
    factory: Callable[[], PluginRetriever]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function a model may call: its definition, and the code that runs it."""

    tool: Tool
    run: Callable[..., Awaitable[Any]]

    @property
    def name(self) -> str:
        return self.tool.name


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric eval suites name as ``name``: ``factory(name, options)`` builds it (options from the suite)."""

    name: str
    factory: Callable[[str, Mapping[str, Any]], Metric | CorpusMetric]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """An ``aiestack NAME`` command: ``command`` is a function (its typed parameters become the
    command's arguments and options, as in Typer) or a ``typer.Typer`` app (a group of sub-commands).
    ``help`` defaults to the function's docstring. A built-in command's name cannot be taken."""

    name: str
    command: Callable[..., Any] | typer.Typer
    help: str | None = None


class Hookspecs:
    @hookspec
    def register_models(self, register: Callable[[ProviderSpec], None]) -> None:
        """Register model providers: call ``register(ProviderSpec(...))`` for each."""

    @hookspec
    def register_guardrails(self, register: Callable[[GuardrailSpec], None]) -> None:
        """Register guards: call ``register(GuardrailSpec(...))`` for each."""

    @hookspec
    def register_retrievers(self, register: Callable[[RetrieverSpec], None]) -> None:
        """Register retrievers: call ``register(RetrieverSpec(...))`` for each."""

    @hookspec
    def register_stores(self, register: Callable[[StoreSpec], None]) -> None:
        """Register storage backends: call ``register(StoreSpec(scheme, capability, factory))`` for each."""

    @hookspec
    def register_tools(self, register: Callable[[ToolSpec], None]) -> None:
        """Register tools: call ``register(ToolSpec(...))`` for each."""

    @hookspec
    def register_metrics(self, register: Callable[[MetricSpec], None]) -> None:
        """Register eval metrics: call ``register(MetricSpec(...))`` for each."""

    @hookspec
    def register_commands(self, register: Callable[[CommandSpec], None]) -> None:
        """Register CLI commands: call ``register(CommandSpec(name, command))`` for each."""
