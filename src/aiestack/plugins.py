"""Loading plugins (pluggy): the built-ins by dotted name, extra plugins, installed entry points.

The hooks and the specs a plugin registers are :mod:`aiestack.hookspecs`. :func:`collect_plugins`
calls every hook once and returns what was registered, checked for clashes; the composition root
(:mod:`aiestack.build`) wires each kind in. Tests may build a stack without entry points by passing
plugins directly (``build_stack(plugins=[my_plugin])``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import pluggy

from aiestack.hookspecs import (
    CommandSpec,
    GuardrailSpec,
    Hookspecs,
    MetricSpec,
    ProviderSpec,
    RetrieverSpec,
    StoreSpec,
    ToolSpec,
)
from aiestack.stores.open import StoreFactory

#: The modules that register the built-in components, loaded by name (no import cycle with them).
BUILTINS = ("aiestack.models.builtin",)

_S = TypeVar("_S")


@dataclass(frozen=True)
class Plugins:
    """What the plugins (built-ins included) registered, by name."""

    providers: Mapping[str, ProviderSpec]
    guardrails: Mapping[str, GuardrailSpec]
    retrievers: Mapping[str, RetrieverSpec]
    stores: Mapping[tuple[str, str], StoreFactory]
    tools: Mapping[str, ToolSpec]
    metrics: Mapping[str, MetricSpec]
    commands: Mapping[str, CommandSpec]


def plugin_manager(
    extra: Iterable[object] = (), *, entry_points: bool = True, builtins: bool = True
) -> pluggy.PluginManager:
    """A plugin manager with the built-ins (unless ``builtins`` is false), ``extra`` plugins and
    (optionally) installed entry points."""
    pm = pluggy.PluginManager("aiestack")
    pm.add_hookspecs(Hookspecs)
    for name in BUILTINS if builtins else ():
        pm.register(importlib.import_module(name), name=name)
    for plugin in extra:
        pm.register(plugin)
    if entry_points:
        pm.load_setuptools_entrypoints("aiestack")
    return pm


def collect_plugins(pm: pluggy.PluginManager) -> Plugins:
    """Call every hook once; a name (or a store's scheme and capability) registered twice is an error."""
    stores: dict[tuple[str, str], StoreFactory] = {}

    def store(spec: StoreSpec) -> None:
        key = (spec.scheme.lower(), spec.capability)
        if key in stores:
            raise ValueError(f"two plugins register the {spec.capability} store for {spec.scheme}://")
        stores[key] = spec.factory

    pm.hook.register_stores(register=store)
    return Plugins(
        providers=_collect(pm.hook.register_models, "model provider", lambda s: s.name),
        guardrails=_collect(pm.hook.register_guardrails, "guardrail", lambda s: s.name),
        retrievers=_collect(pm.hook.register_retrievers, "retriever", lambda s: s.name),
        stores=MappingProxyType(stores),
        tools=_collect(pm.hook.register_tools, "tool", lambda s: s.name),
        metrics=_collect(pm.hook.register_metrics, "metric", lambda s: s.name),
        commands=_collect(pm.hook.register_commands, "command", lambda s: s.name),
    )


def collect_commands(pm: pluggy.PluginManager) -> Mapping[str, CommandSpec]:
    """Only the ``register_commands`` hook: what the CLI needs, without importing every provider."""
    return _collect(pm.hook.register_commands, "command", lambda s: s.name)


def _collect(hook: Callable[..., object], what: str, name: Callable[[_S], str]) -> Mapping[str, _S]:
    found: dict[str, _S] = {}

    def register(spec: _S) -> None:
        key = name(spec)
        if key in found:
            raise ValueError(f"two plugins register the {what} {key!r}")
        found[key] = spec

    hook(register=register)
    return MappingProxyType(found)
