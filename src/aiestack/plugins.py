"""Extension points (pluggy). Built-in components register through the same hooks as plugins.

A plugin is a module or object with ``@hookimpl``-decorated functions, shipped as a package with an
``aiestack`` entry point (``[project.entry-points.aiestack] myplugin = "my_pkg.plugin"``)::

    from aiestack.plugins import hookimpl

    @hookimpl
    def register_models(register):
        register("my_provider", MyConfig, lambda name, cfg, env: MyProvider(...))

Tests may build a stack without the plugin manager by passing providers directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy
from pydantic import BaseModel

from aiestack.models.base import ChatModel

hookspec = pluggy.HookspecMarker("aiestack")
hookimpl = pluggy.HookimplMarker("aiestack")

ProviderFactory = Callable[[str, Any, Mapping[str, str]], ChatModel]
"""(model name, validated config, environment) → provider instance."""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """How to build a provider from a ``[models.NAME]`` table whose ``provider`` is ``name``."""

    name: str
    config: type[BaseModel]
    factory: ProviderFactory
    local: bool = False  # runs on this machine (costs nothing)
    upstream: Callable[[str, Any], str] | None = None  # the upstream model id (default: cfg.model or NAME)


class Hookspecs:
    @hookspec
    def register_models(self, register: Callable[[ProviderSpec], None]) -> None:
        """Register model providers: call ``register(ProviderSpec(...))`` for each."""


def plugin_manager(extra: Iterable[object] = (), *, entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, ``extra`` plugins and (optionally) installed entry points."""
    from aiestack.models import builtin

    pm = pluggy.PluginManager("aiestack")
    pm.add_hookspecs(Hookspecs)
    pm.register(builtin)
    for plugin in extra:
        pm.register(plugin)
    if entry_points:
        pm.load_setuptools_entrypoints("aiestack")
    return pm


def provider_specs(pm: pluggy.PluginManager) -> dict[str, ProviderSpec]:
    specs: dict[str, ProviderSpec] = {}

    def register(spec: ProviderSpec) -> None:
        if spec.name in specs:
            raise ValueError(f"two plugins register the model provider {spec.name!r}")
        specs[spec.name] = spec

    pm.hook.register_models(register=register)
    return specs
