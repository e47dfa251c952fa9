"""``[routes.NAME.sampling]``: test-time compute, compiled once into the route's plan.

Example::

    [routes.math]
    deployments = ["gemma-3-270m"]
    [routes.math.sampling]
    strategy = "self_consistency"   # or best_of_n
    n = 5                           # samples per request, generated concurrently
    temperature = 0.7               # for requests that set none (a sampled vote needs diversity)
    extract = "final_number"        # self_consistency: final_number | text | regex
    # pattern = "answer: (\\w+)"    # extract = "regex": the answer is the first group (or the match)

    [routes.code.sampling]
    strategy = "best_of_n"
    n = 4
    selector = "judge"              # judge | verifier | logprob
    judge = "gpt-4o-mini"           # selector = "judge": a configured model or route
    # verifier = "mypkg.checks:score"  # selector = "verifier": f(question, answer) -> float | bool

Every error names the key (``routes.NAME.sampling.KEY``) and the fix. The compiled
:class:`SamplingPlan` is the route plan's part (``plan.part(SamplingPlan)``), read by the
:class:`~aiestack.sampling.stage.Sampling` stage and by the Limits stage (a sampling route reserves
``n`` calls' tokens and cost).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiestack.errors import ConfigError
from aiestack.sampling.vote import Extractor, extractor
from aiestack.settings import config_error

Strategy = Literal["best_of_n", "self_consistency"]
SelectorName = Literal["judge", "verifier", "logprob"]
#: ``verifier(question, answer) -> float | bool`` (sync or async): the higher, the better the answer.
Verifier = Callable[[str, str], Any]

#: The most samples one request may fan out to.
MAX_N = 32


class SamplingConfig(BaseModel):
    """A ``[routes.NAME.sampling]`` table."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(description="best_of_n (a selector picks one) or self_consistency (majority vote).")
    n: int = Field(default=5, ge=2, le=MAX_N, description="Samples per request, generated concurrently.")
    temperature: float | None = Field(
        default=0.7, ge=0, le=2, description="Temperature of each sample when the request sets none (empty: the model's default)."
    )
    selector: SelectorName | None = Field(default=None, description="best_of_n: judge, verifier or logprob.")
    judge: str | None = Field(default=None, description="selector = judge: the configured model or route that picks.")
    judge_max_chars: int = Field(default=4000, ge=100, description="Each candidate is cut to this many characters for the judge.")
    verifier: str | None = Field(default=None, description="selector = verifier: 'module:function' scoring (question, answer).")
    extract: Literal["final_number", "text", "regex"] = Field(
        default="final_number", description="self_consistency: how the answer a sample votes for is read."
    )
    pattern: str | None = Field(default=None, description="extract = regex: the pattern (its first group is the answer).")

    @model_validator(mode="after")
    def _consistent(self) -> SamplingConfig:
        if self.strategy == "best_of_n":
            if self.selector is None:
                raise ValueError("best_of_n needs a selector: judge, verifier or logprob")
            if self.selector == "judge" and not self.judge:
                raise ValueError("selector = 'judge' needs judge = a configured model or route")
            if self.selector == "verifier" and not self.verifier:
                raise ValueError("selector = 'verifier' needs verifier = 'module:function'")
        elif self.selector is not None:
            raise ValueError("self_consistency votes; a selector belongs to best_of_n (remove it or change the strategy)")
        if self.extract == "regex" and not self.pattern:
            raise ValueError("extract = 'regex' needs a pattern")
        return self


@dataclass(frozen=True, slots=True, eq=False)
class SamplingPlan:
    """A route's test-time compute, compiled: how many samples, and how one answer is chosen."""

    strategy: Strategy
    n: int
    temperature: float | None = None
    selector: SelectorName | None = None
    judge: str | None = None
    judge_max_chars: int = 4000
    verifier: Verifier | None = None
    extract: Extractor | None = None


def compile_sampling(table: Mapping[str, Any], *, key: str, names: Callable[[str], bool] | None = None) -> SamplingPlan:
    """Validate one ``sampling`` table into a :class:`SamplingPlan`; a ConfigError names ``key.FIELD``.

    ``names(judge)`` says whether the judge names a configured model or route.
    """
    try:
        cfg = SamplingConfig.model_validate(dict(table))
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "value_error" and not err["loc"]:  # a rule across keys (_consistent)
            raise ConfigError(key, err["msg"].removeprefix("Value error, "), "see docs/routes.md (sampling)") from None
        raise config_error(exc, SamplingConfig, source="aiestack.toml", prefix=key) from None
    if cfg.judge and names is not None and not names(cfg.judge):
        raise ConfigError(f"{key}.judge", f"unknown model or route {cfg.judge!r}", "name a model under [models] or a route under [routes]")
    try:
        extract = extractor(cfg.extract, cfg.pattern) if cfg.strategy == "self_consistency" else None
    except ValueError as exc:
        raise ConfigError(f"{key}.pattern", str(exc), "write a valid Python regular expression") from None
    return SamplingPlan(
        strategy=cfg.strategy,
        n=cfg.n,
        temperature=cfg.temperature,
        selector=cfg.selector,
        judge=cfg.judge,
        judge_max_chars=cfg.judge_max_chars,
        verifier=load_verifier(cfg.verifier, key=f"{key}.verifier") if cfg.verifier else None,
        extract=extract,
    )


def build_sampling_routes(routes: Mapping[str, Any], names: Callable[[str], bool]) -> dict[str, SamplingPlan]:
    """The sampling plan of every route with a ``sampling`` table (``routes`` maps names to RouteConfigs)."""
    out: dict[str, SamplingPlan] = {}
    for name, cfg in routes.items():
        table = getattr(cfg, "sampling", None) or {}
        if table:
            out[name] = compile_sampling(table, key=f"routes.{name}.sampling", names=names)
    return out


def load_verifier(spec: str, *, key: str) -> Verifier:
    """The function ``module:function`` names, imported once when the stack is built."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(key, f"{spec!r} is not 'module:function'", "write e.g. 'mypkg.checks:score'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(key, f"cannot import {module_name!r} ({exc})", "install the module or fix its name") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(key, f"{module_name} has no function {attr!r}", "name a function of that module")
    try:
        inspect.signature(fn).bind("question", "answer")
    except (TypeError, ValueError):
        raise ConfigError(key, f"{spec} does not take (question, answer)", "give it two positional parameters") from None
    return fn
