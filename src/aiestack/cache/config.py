"""Cache policies: the ``[cache]`` defaults, overridden per route by ``[routes.NAME.cache]``.

::

    [cache]                      # defaults for every route and bare model
    ttl_s = 86400
    threshold = 0.80

    [routes.support.cache]       # this route only
    semantic = false             # exact hits only
    deterministic_only = false   # cache its answers at any temperature (an explicit opt-in)
    ttl_s = 3600

A request may say ``metadata = {"cache": "off"}`` (neither read nor write), ``"refresh"`` (skip the
lookup, store the new answer) or ``"on"`` (cache it even at a temperature above 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from aiestack.settings import CacheSettings, config_error

_DEFAULTS = CacheSettings()


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How one route's answers are cached: the ``[cache]`` keys a route may override, compiled.

    Each key is declared once, in :class:`~aiestack.settings.CacheSettings` (type, bounds, default,
    description); the defaults here are read from it, and ``[routes.NAME.cache]`` is derived from it.
    """

    enabled: bool = _DEFAULTS.enabled
    exact: bool = _DEFAULTS.exact
    semantic: bool = _DEFAULTS.semantic
    ttl_s: float = _DEFAULTS.ttl_s
    threshold: float = _DEFAULTS.threshold
    deterministic_only: bool = _DEFAULTS.deterministic_only
    store_flagged: bool = _DEFAULTS.store_flagged
    semantic_max_chars: int = _DEFAULTS.semantic_max_chars


_POLICY_KEYS = tuple(f.name for f in fields(CachePolicy))


def _optional(name: str) -> tuple[Any, FieldInfo]:
    """The ``[cache]`` field ``name`` as an optional route override: same bounds and description, default None."""
    declared = CacheSettings.model_fields[name]
    info = FieldInfo.merge_field_infos(declared, default=None)
    return declared.annotation | None, info  # type: ignore[operator]  # every CacheSettings field is annotated


#: ``[routes.NAME.cache]``: every key optional, defaulting to the ``[cache]`` value (derived from CacheSettings).
RouteCacheConfig: type[BaseModel] = create_model(
    "RouteCacheConfig",
    __config__=ConfigDict(extra="forbid"),
    **{name: _optional(name) for name in _POLICY_KEYS},  # type: ignore[call-overload]
)


def default_policy(settings: CacheSettings) -> CachePolicy:
    """The ``[cache]`` settings as the policy of every name without a route override."""
    return CachePolicy(**settings.model_dump(include=set(_POLICY_KEYS)))


def route_policies(
    settings: CacheSettings, tables: Mapping[str, Mapping[str, Any]]
) -> dict[str, CachePolicy]:
    """The policy of each route from its ``cache`` table; raises ConfigError naming ``routes.NAME.cache.KEY``."""
    base = settings.model_dump(include=set(_POLICY_KEYS))
    out: dict[str, CachePolicy] = {}
    for name, table in tables.items():
        try:
            cfg = RouteCacheConfig.model_validate(dict(table))
        except ValidationError as exc:
            raise config_error(
                exc, RouteCacheConfig, source="aiestack.toml", prefix=f"routes.{name}.cache"
            ) from None
        overrides = {k: v for k, v in cfg.model_dump().items() if v is not None}
        out[name] = CachePolicy(**{**base, **overrides})
    return out
