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
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiestack.settings import CacheSettings, config_error


class RouteCacheConfig(BaseModel):
    """``[routes.NAME.cache]``: every key is optional and defaults to the ``[cache]`` value."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(default=None, description="Cache this route's answers at all.")
    exact: bool | None = Field(default=None, description="Use the exact cache.")
    semantic: bool | None = Field(default=None, description="Use the semantic cache.")
    ttl_s: float | None = Field(default=None, gt=0, description="Lifetime of this route's entries.")
    threshold: float | None = Field(default=None, ge=-1, le=1, description="Semantic similarity threshold.")
    deterministic_only: bool | None = Field(default=None, description="false: cache at any temperature.")
    store_flagged: bool | None = Field(
        default=None, description="Also cache answers an output guard flagged."
    )
    semantic_max_chars: int | None = Field(
        default=None, ge=1, description="Longest last user turn looked up by meaning."
    )


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool = True
    exact: bool = True
    semantic: bool = True
    ttl_s: float = 86400.0
    threshold: float = 0.80
    deterministic_only: bool = True
    store_flagged: bool = False
    semantic_max_chars: int = 400


def default_policy(settings: CacheSettings) -> CachePolicy:
    return CachePolicy(
        enabled=settings.enabled,
        exact=settings.exact,
        semantic=settings.semantic,
        ttl_s=settings.ttl_s,
        threshold=settings.threshold,
        deterministic_only=settings.deterministic_only,
        store_flagged=settings.store_flagged,
        semantic_max_chars=settings.semantic_max_chars,
    )


def route_policies(
    settings: CacheSettings, tables: Mapping[str, Mapping[str, Any]]
) -> dict[str, CachePolicy]:
    """The policy of each route from its ``cache`` table; raises ConfigError naming ``routes.NAME.cache.KEY``."""
    base = default_policy(settings)
    out: dict[str, CachePolicy] = {}
    for name, table in tables.items():
        try:
            cfg = RouteCacheConfig.model_validate(dict(table))
        except ValidationError as exc:
            raise config_error(
                exc, RouteCacheConfig, source="aiestack.toml", prefix=f"routes.{name}.cache"
            ) from None
        overrides = {k: v for k, v in cfg.model_dump().items() if v is not None}
        out[name] = CachePolicy(**{**_fields(base), **overrides})
    return out


def _fields(policy: CachePolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in CachePolicy.__slots__}
