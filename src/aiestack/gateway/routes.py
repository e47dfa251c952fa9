"""Routes from config: what a request's ``model`` names, resolved to an ordered plan of attempts.

A request names either a configured model (a *bare* model: one call, exactly as without routes)
or a route, declared in aiestack.toml::

    [routes.chat]
    deployments = [{ model = "gpt-4o-mini", weight = 3 }, { model = "local-vllm", weight = 1 }]
    fallbacks = ["claude", "gemma-3-270m"]   # models, or other routes
    timeout_s = 30          # time to first token, per attempt
    retries = 2             # per deployment, for retryable errors
    backoff_base_s = 0.25
    backoff_max_s = 8
    [routes.chat.breaker]
    failures = 5            # consecutive failures that open it
    cooldown_s = 30         # open → half-open after this

Deployments are interchangeable servers of one model (they share the load by weight); fallbacks
are other models tried in order when every deployment failed. A request's plan is: one deployment
chosen by weight, then the route's other deployments in weighted-random order (so the load of a
failed deployment spreads by weight too), then the fallbacks in order. A fallback that is a
route expands to its own plan, with its own retry policy and timeout; a fallback that is a model
is tried with the policy of the route that lists it. A model appears at most once in a plan.

The table is validated and built once (:func:`build_route_table`); planning a request is a few
dict lookups and one random draw per deployment.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aiestack.errors import ConfigError, ModelNotFound
from aiestack.gateway.breaker import BreakerSettings
from aiestack.gateway.retry import NO_RETRY, RetryPolicy
from aiestack.models.registry import ModelRegistry
from aiestack.pipeline import PipelineError
from aiestack.plans import RoutePlans
from aiestack.settings import config_error
from aiestack.types import RoutePlan

# --------------------------------------------------------------------------- config (the TOML edge)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BreakerConfig(_Table):
    """``[routes.NAME.breaker]``: when the breakers of this route's models open and recover."""

    failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open a deployment's breaker."
    )
    cooldown_s: float = Field(default=30.0, gt=0, description="How long a breaker stays open before a probe.")

    def settings(self) -> BreakerSettings:
        return BreakerSettings(failures=self.failures, cooldown_s=self.cooldown_s)


class DeploymentConfig(_Table):
    model: str = Field(description="A configured model name ([models.NAME]).")
    weight: float = Field(
        default=1.0, gt=0, description="Share of the route's traffic, relative to the others."
    )


class RouteConfig(_Table):
    """A ``[routes.NAME]`` table in aiestack.toml."""

    deployments: list[DeploymentConfig] = Field(
        min_length=1, description="Models that serve this route, sharing the load by weight."
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Models or routes tried in order when every deployment failed."
    )
    timeout_s: float | None = Field(
        default=30.0, gt=0, description="Longest wait for the first token, per attempt (empty: no limit)."
    )
    retries: int = Field(default=2, ge=0, le=10, description="Retries per deployment for retryable errors.")
    backoff_base_s: float = Field(default=0.25, ge=0, description="First retry waits up to this long.")
    backoff_max_s: float = Field(
        default=8.0, ge=0, description="Cap on one backoff wait (and on Retry-After)."
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    prompt_cache: bool = Field(
        default=False,
        description="Mark the stable prefix (tools, system prompt, earlier turns) for Anthropic's prompt cache "
        "(cache_control); OpenAI caches long prefixes by itself.",
    )
    # The application pipeline of the route. Each wing validates its own table when the stack is
    # built (with its own pydantic model and a ConfigError naming ``routes.NAME.<table>.<key>``),
    # so the gateway does not need to know the wings' options.
    collection: str | None = Field(
        default=None, description="Answer with retrieval from this collection (RAG), citing sources."
    )
    rag: dict[str, Any] = Field(
        default_factory=dict, description="[routes.NAME.rag]: retrieval mode, top_k, prompt template, rerank..."
    )
    prompt: str | None = Field(
        default=None, description="A registered prompt, 'name@label' or 'name@version', used as the system prompt."
    )
    guards: dict[str, Any] = Field(
        default_factory=dict, description="[routes.NAME.guards]: per guard, block|redact|flag|retry|off."
    )
    cache: dict[str, Any] = Field(
        default_factory=dict, description="[routes.NAME.cache]: exact/semantic caching of this route's answers."
    )
    sampling: dict[str, Any] = Field(
        default_factory=dict, description="[routes.NAME.sampling]: best-of-N or self-consistency (test-time compute)."
    )
    dicl: dict[str, Any] = Field(
        default_factory=dict, description="[routes.NAME.dicl]: show the model the most similar examples of a dataset."
    )
    examples: list[str] = Field(
        default_factory=list, description="Example utterances: the semantic router may pick this route for similar requests."
    )
    threshold: float | None = Field(
        default=None, ge=-1, le=1, description="Least similarity for the semantic router to pick this route."
    )

    @field_validator("deployments", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        """``deployments = ["a", "b"]`` is short for equal weights."""
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> RouteConfig:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s:g}) must be at least backoff_base_s ({self.backoff_base_s:g})"
            )
        return self

    def policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, base_s=self.backoff_base_s, max_s=self.backoff_max_s)


# --------------------------------------------------------------------------- plans (the core)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One model to try for a request, and how: its retry policy and time-to-first-token limit.

    ``route`` is the route that contributed it (``None`` for a bare model); ``role`` says whether
    it is one of that route's deployments or a fallback; ``group`` identifies the set of
    interchangeable deployments it belongs to (a context-length error skips the rest of the group).
    """

    model: str
    policy: RetryPolicy
    timeout_s: float | None
    route: str | None
    role: Literal["model", "deployment", "fallback"]
    group: int
    breaker: bool  # consult and feed the model's circuit breaker
    prompt_cache: bool = False  # mark the prompt's stable prefix for the provider's cache


@dataclass(frozen=True, slots=True)
class Plan:
    """What to try for one request, in order. ``route`` is ``None`` when the request named a model."""

    route: str | None
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class _Group:
    attempts: tuple[Attempt, ...]
    weights: tuple[float, ...] | None  # weighted-random order when set, else the given order


@dataclass(frozen=True, slots=True)
class RouteAttempts:
    """A route's part of its :class:`~aiestack.types.RoutePlan`: its deployments and fallbacks, compiled.

    Groups of attempts, in order; :meth:`order` draws one request's order (weighted-random within
    a group of deployments), each model once.
    """

    groups: tuple[_Group, ...]

    def order(self, rng: random.Random) -> tuple[Attempt, ...]:
        seen: set[str] = set()
        attempts: list[Attempt] = []
        for group in self.groups:
            for attempt in _ordered(group, rng):
                if attempt.model not in seen:
                    seen.add(attempt.model)
                    attempts.append(attempt)
        return tuple(attempts)


class RouteTable:
    """Resolves a request's ``model`` to a :class:`Plan`. Build it with :func:`build_route_table`."""

    def __init__(
        self,
        models: ModelRegistry,
        routes: Mapping[str, RouteConfig] | None = None,
        *,
        breaker_settings: Mapping[str, BreakerSettings] | None = None,
    ) -> None:
        self._models = models
        self._configs: dict[str, RouteConfig] = dict(routes or {})
        counter = iter(range(1 << 30))
        self._attempts = {name: RouteAttempts(self._expand(name, counter)) for name in self._configs}
        self.breaker_settings: Mapping[str, BreakerSettings] = dict(breaker_settings or {})
        # Plans of bare models never change: build them once, off the request path.
        self._bare = {e.name: _bare_plan(e.name) for e in models}

    @property
    def names(self) -> tuple[str, ...]:
        """The route names, in config order."""
        return tuple(self._configs)

    def config(self, name: str) -> RouteConfig:
        return self._configs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    def __iter__(self) -> Iterator[str]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def plan(self, name: str, rng: random.Random) -> Plan:
        """The attempts for a request naming ``name``; raises :class:`ModelNotFound` if it names nothing.

        The Generate stage does not call this: it orders the attempts its exchange's
        :class:`~aiestack.types.RoutePlan` carries (:class:`RouteAttempts`) and asks here only
        for bare models (:meth:`bare`).
        """
        attempts = self._attempts.get(name)
        if attempts is None:
            return self.bare(name)
        return Plan(name, attempts.order(rng))

    def attempts(self, name: str) -> RouteAttempts:
        """The compiled attempts of the route ``name`` (its part of the route plan)."""
        return self._attempts[name]

    def bare(self, name: str) -> Plan:
        """The one-call plan of the bare model ``name``; raises :class:`ModelNotFound` if it names nothing.

        A route's name is refused: its attempts come with its route plan, which the pipeline sets
        on the exchange (``Pipeline(..., plans=...)``).
        """
        bare = self._bare.get(name)
        if bare is not None:
            return bare
        if name in self._configs:
            raise PipelineError(
                f"The exchange for route '{name}' carries no route plan.",
                hint="Run the Generate stage in a Pipeline given the route plans (plans=route_plans(table)).",
            )
        if name in self._models or not self._configs:
            self._models.resolve(name)  # raises the registry's own "did you mean" error if unknown
            return _bare_plan(name)  # a model registered after the table was built
        raise self._not_found(name)

    def _expand(self, name: str, counter: Iterator[int], trail: tuple[str, ...] = ()) -> tuple[_Group, ...]:
        """The groups of route ``name``: its deployments, then each fallback (a route expands in place)."""
        cfg = self._configs[name]
        policy = cfg.policy()
        group = next(counter)
        deployments = tuple(
            Attempt(d.model, policy, cfg.timeout_s, name, "deployment", group, breaker=True,
                    prompt_cache=cfg.prompt_cache)
            for d in cfg.deployments
        )
        groups = [_Group(deployments, tuple(d.weight for d in cfg.deployments))]
        for fallback in cfg.fallbacks:
            if fallback in self._configs:
                if fallback in (*trail, name):  # build_route_table rejects cycles; stay safe regardless
                    continue
                groups.extend(self._expand(fallback, counter, (*trail, name)))
            else:
                attempt = Attempt(
                    fallback, policy, cfg.timeout_s, name, "fallback", next(counter), breaker=True,
                    prompt_cache=cfg.prompt_cache,
                )
                groups.append(_Group((attempt,), None))
        return tuple(groups)

    def _not_found(self, name: str) -> ModelNotFound:
        models = sorted(e.name for e in self._models)
        routes = sorted(self._configs)
        close = difflib.get_close_matches(name, [*models, *routes], n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        return ModelNotFound(
            f"The model or route '{name}' does not exist.",
            hint=f"{hint}Configured models: {', '.join(models) or 'none'}; routes: {', '.join(routes)}. "
            "Add it under [models] or [routes] in aiestack.toml.",
        )


def route_plans(table: RouteTable) -> RoutePlans:
    """The gateway's share of every route's :class:`~aiestack.types.RoutePlan`: what the route is made of.

    Its part is the route's compiled :class:`RouteAttempts`, which the Generate stage tries. The
    wings add their parts (guards, cache policy, prompt, RAG) with :meth:`RoutePlans.with_part`.
    """
    plans: dict[str, RoutePlan] = {}
    for name in table:
        cfg = table.config(name)
        plans[name] = RoutePlan(
            route=name,
            deployments=tuple(d.model for d in cfg.deployments),
            fallbacks=tuple(cfg.fallbacks),
            collection=cfg.collection,
            prompt=cfg.prompt,
            examples=tuple(cfg.examples),
            parts={RouteAttempts: table.attempts(name)},
        )
    return RoutePlans(plans)


def _bare_plan(model: str) -> Plan:
    return Plan(None, (Attempt(model, NO_RETRY, None, None, "model", 0, breaker=False),))


def _ordered(group: _Group, rng: random.Random) -> Sequence[Attempt]:
    """The group's attempts; a weighted group in weighted-random order without replacement.

    The first pick is a plain weighted choice, so each deployment is tried first in proportion to
    its weight; each later pick is weighted among those left.
    """
    if group.weights is None or len(group.attempts) == 1:
        return group.attempts
    pool = list(zip(group.attempts, group.weights, strict=True))
    out: list[Attempt] = []
    while pool:
        total = sum(w for _, w in pool)
        point = rng.random() * total
        index = len(pool) - 1  # float rounding can leave ``point`` a hair above the last boundary
        for i, (_, weight) in enumerate(pool):
            point -= weight
            if point < 0:
                index = i
                break
        out.append(pool.pop(index)[0])
    return out


# --------------------------------------------------------------------------- validation


def build_route_table(routes: Mapping[str, Mapping[str, Any]], models: ModelRegistry) -> RouteTable:
    """Validate the ``[routes.NAME]`` tables against the configured models and build the table.

    Raises :class:`ConfigError` naming the key and the fix for: an invalid table (unknown key,
    weight ≤ 0, ...), a route named like a model, a deployment or fallback that names nothing,
    a deployment that names a route, a model listed twice as a deployment, fallbacks that form a
    cycle, and two routes that configure different breakers for a model they share.
    """
    configs: dict[str, RouteConfig] = {}
    for name, table in routes.items():
        key = f"routes.{name}"
        if name in models:
            raise ConfigError(
                key,
                f"'{name}' is the name of a configured model too",
                "rename the route (a request's model field must name one thing)",
            )
        try:
            configs[name] = RouteConfig.model_validate(dict(table))
        except ValidationError as exc:
            raise config_error(exc, RouteConfig, source="aiestack.toml", prefix=key) from None
    for name, cfg in configs.items():
        _check_names(name, cfg, configs, models)
    for name in configs:
        _check_cycles(name, configs, ())
    return RouteTable(models, configs, breaker_settings=_breaker_settings(configs))


def _check_names(
    name: str, cfg: RouteConfig, configs: Mapping[str, RouteConfig], models: ModelRegistry
) -> None:
    model_names = sorted(e.name for e in models)
    seen: set[str] = set()
    for i, deployment in enumerate(cfg.deployments):
        key = f"routes.{name}.deployments.{i}.model"
        if deployment.model in configs:
            raise ConfigError(
                key,
                f"'{deployment.model}' is a route, and deployments must be models",
                f"list the route '{deployment.model}' under routes.{name}.fallbacks instead",
            )
        if deployment.model not in models:
            fix = _fix(deployment.model, model_names, "a model configured under [models]")
            raise ConfigError(key, f"unknown model {deployment.model!r}", fix)
        if deployment.model in seen:
            raise ConfigError(
                key,
                f"the model '{deployment.model}' is listed twice",
                "list each model once and give it a larger weight to send it more traffic",
            )
        seen.add(deployment.model)
    for i, fallback in enumerate(cfg.fallbacks):
        if fallback == name:
            raise ConfigError(
                f"routes.{name}.fallbacks.{i}", "a route cannot fall back to itself", "remove it"
            )
        if fallback not in models and fallback not in configs:
            fix = _fix(
                fallback, [*model_names, *sorted(configs)], "a model under [models] or a route under [routes]"
            )
            raise ConfigError(f"routes.{name}.fallbacks.{i}", f"unknown model or route {fallback!r}", fix)


def _fix(name: str, known: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    did = f"did you mean '{close[0]}'? " if close else ""
    return f"{did}name {what} (known: {', '.join(known) or 'none'})"


def _check_cycles(name: str, configs: Mapping[str, RouteConfig], trail: tuple[str, ...]) -> None:
    if name in trail:
        cycle = " → ".join((*trail[trail.index(name) :], name))
        raise ConfigError(
            f"routes.{trail[0]}.fallbacks",
            f"the fallbacks form a cycle: {cycle}",
            "remove one of the routes from the other's fallbacks",
        )
    for fallback in configs[name].fallbacks:
        if fallback in configs:
            _check_cycles(fallback, configs, (*trail, name))


def _breaker_settings(configs: Mapping[str, RouteConfig]) -> dict[str, BreakerSettings]:
    """Each model's breaker settings, from the routes that use it.

    Breakers are per model, shared by routes, so a model gets one setting: the one a route sets
    explicitly (a ``[routes.NAME.breaker]`` table), else the defaults. Two routes that set
    different breakers for a model they share are a configuration error, not a silent pick.
    """
    chosen: dict[str, tuple[str, BreakerSettings]] = {}
    for name, cfg in configs.items():
        if "breaker" not in cfg.model_fields_set:
            continue
        settings = cfg.breaker.settings()
        for model in (*(d.model for d in cfg.deployments), *(f for f in cfg.fallbacks if f not in configs)):
            previous = chosen.get(model)
            if previous is not None and previous[1] != settings:
                raise ConfigError(
                    f"routes.{name}.breaker",
                    f"the model '{model}' also gets a different breaker from routes.{previous[0]}.breaker "
                    "(a model has one breaker, shared by every route)",
                    f"give routes.{name}.breaker and routes.{previous[0]}.breaker the same values",
                )
            chosen[model] = (name, settings)
    return {model: settings for model, (_, settings) in chosen.items()}
