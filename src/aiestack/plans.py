"""The route plans: every ``[routes.NAME]`` compiled once, at build time, into a frozen :class:`RoutePlan`.

A request's ``model`` names a route or a bare model. The pipeline looks that name up here once,
when the exchange enters (:class:`~aiestack.pipeline.Pipeline`), and sets the plan on the exchange;
the semantic router may replace it with the plan of the route it picks. Every stage then reads
``ex.plan``: the guards, the cache policy, the prompt spec and the RAG plan of the route, each
compiled by its own wing (the wing that owns a setting validates it, once) and added here with
:meth:`RoutePlans.with_part`::

    plans = route_plans(table)                                  # gateway: deployments, fallbacks...
    plans = plans.with_part(Guards, guards.default, guards.routes)
    plans = plans.with_part(CachePolicy, default_policy, route_policies)

A name no route declares (a bare model, the router's ``auto``, a typo the Generate stage will
report) gets the default plan: the wings' defaults, ``route = None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import TypeVar

from aiestack.types import RoutePlan

_Part = TypeVar("_Part")


class RoutePlans:
    """The plan of each route, and the default plan for every other name. Immutable once built."""

    __slots__ = ("_default", "_routes")

    def __init__(self, routes: Mapping[str, RoutePlan] | None = None, default: RoutePlan | None = None) -> None:
        self._routes: dict[str, RoutePlan] = dict(routes or {})
        self._default = default if default is not None else RoutePlan()

    @property
    def default(self) -> RoutePlan:
        """The plan of a name that no route declares (a bare model)."""
        return self._default

    def for_name(self, name: str) -> RoutePlan:
        """The plan of the route ``name``, else the default plan (one dict lookup)."""
        return self._routes.get(name, self._default)

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def with_part(
        self, kind: type[_Part], default: _Part | None, per_route: Mapping[str, _Part] | None = None
    ) -> RoutePlans:
        """A new book where every route's plan holds its part of type ``kind`` (``default`` if it has none).

        ``per_route`` maps route names to what a wing compiled from their tables; a route without
        an entry, and the default plan, get ``default`` (nothing when it is ``None``).
        """
        per_route = per_route or {}
        unknown = sorted(set(per_route) - set(self._routes))
        if unknown:
            raise ValueError(f"parts for routes that are not planned: {', '.join(unknown)}")

        def add(plan: RoutePlan, part: _Part | None) -> RoutePlan:
            if part is None:
                return plan
            return dataclasses.replace(plan, parts={**plan.parts, kind: part})

        routes = {name: add(plan, per_route.get(name, default)) for name, plan in self._routes.items()}
        return RoutePlans(routes, add(self._default, default))
