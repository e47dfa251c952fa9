"""The guard policy: per guard, what to do (block | redact | flag | retry | off) and its options.

The stack-wide default is the ``[guards]`` section of the settings; a route may override any guard
in ``[routes.NAME.guards]``. A guard's entry is either an action (``pii = "flag"``) or a table
(``injection = { action = "block", threshold = 0.7 }``); a route's entry is merged over the default,
so ``[routes.support.guards] pii = "block"`` keeps the default PII options. Invalid entries fail at
start with a :class:`~aiestack.errors.ConfigError` naming ``routes.NAME.guards.<guard>.<key>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aiestack.errors import ConfigError
from aiestack.guardrails.pii import ENTITIES
from aiestack.settings import config_error


class _Guard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def on(self) -> bool:
        return getattr(self, "action", "off") != "off"


class PIIGuard(_Guard):
    action: Literal["block", "redact", "flag", "off"] = "redact"
    entities: tuple[str, ...] = Field(default=ENTITIES, description="Entity types to look for.")
    region: str = Field(default="US", description="Region of phone numbers written without a country code.")

    @field_validator("entities")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; use some of {', '.join(ENTITIES)}")
        return v


class SecretsGuard(_Guard):
    action: Literal["block", "redact", "flag", "off"] = "redact"
    min_entropy: float = Field(default=3.0, ge=0, le=8, description="Bits per character of a context-named generic secret.")


class InjectionGuard(_Guard):
    action: Literal["block", "flag", "off"] = "block"
    threshold: float = Field(default=0.5, gt=0, le=1, description="Score at which a prompt counts as an injection.")
    classifier: bool = Field(default=True, description="Use the packaged classifier heads named in heads (else heuristics only).")
    heads: tuple[Literal["static", "lexical", "combined", "injection", "jailbreak"], ...] = Field(
        default=("static",),
        description="Classifier heads that count: static (n-grams, a persona cue and the packaged static embedder's vectors, the "
        "semantic cache's; trained on both data sets, benign mentions, ordinary requests and chat; ~0.2 ms a prompt: the default); "
        "lexical (n-grams and the cue only, no chat in training; no embedding model, microseconds: more chat flagged, fewer "
        "deepset-style hijacks caught); combined (the same sets over the all-MiniLM-L6-v2 "
        "embedding: embeds every new prompt); jailbreak (DAN-style prompts only); injection (deepset-style: also persona and task hijacks).",
    )
    judge: str | None = Field(default=None, description="A model or route asked to decide scores between judge_min and threshold.")
    judge_min: float = Field(default=0.2, ge=0, le=1, description="Lowest score that is sent to the judge.")


class ContextInjectionGuard(_Guard):
    action: Literal["block", "flag", "off"] = "block"
    threshold: float = Field(default=0.5, gt=0, le=1, description="Score at which a retrieved chunk is dropped (block) or flagged.")
    indirect: bool = Field(
        default=True, description="Judge each sentence of a chunk with the indirect-injection head (trained on BIPIA train attacks and documents)."
    )
    heads: tuple[Literal["static", "lexical", "combined", "injection", "jailbreak"], ...] = Field(
        default=(),
        description="Prompt classifier heads that also count for whole chunks (default none: both flag most ordinary documents; see bench/guardrails.md).",
    )


class TopicsGuard(_Guard):
    action: Literal["block", "redact", "flag", "retry", "off"] = "block"
    terms: tuple[str, ...] = Field(default=(), description="Words or phrases that must not appear.")
    topics: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="Topic name → keywords.")
    min_hits: int = Field(default=2, ge=1, description="Distinct keywords of a topic needed to match it.")
    scope: Literal["input", "output", "both"] = "both"


class ToxicityGuard(_Guard):
    action: Literal["block", "redact", "flag", "retry", "off"] = "block"
    threshold: float = Field(default=0.5, gt=0, le=1, description="Score at which a sentence counts as toxic.")
    labels: tuple[Literal["toxic", "hate"], ...] = Field(
        default=("toxic",),
        min_length=1,
        description="Classifier heads that count: toxic (hate speech or offensive language), hate (hate speech only).",
    )
    scope: Literal["input", "output", "both"] = "both"


class PIILeakGuard(_Guard):
    action: Literal["block", "redact", "flag", "retry", "off"] = "redact"


class CanaryGuard(_Guard):
    action: Literal["block", "flag", "retry", "off"] = "block"
    always: bool = Field(
        default=False, description="Add a canary even to requests without a system prompt (e.g. when the route's prompt adds one)."
    )


class SchemaGuard(_Guard):
    action: Literal["block", "flag", "retry", "off"] = "retry"
    retries: int = Field(default=2, ge=0, le=5, description="Re-asks before giving up on a valid answer.")
    # Block by default: a client that asked for a schema parses the answer, and a 200 carrying text
    # known to break the schema is a failure it cannot see. ``flag`` is the opt-in for lenient parsers.
    exhausted: Literal["block", "flag"] = Field(
        default="block",
        description="When the re-asks run out: block (an error naming the check), or pass the last answer on flagged (for clients that parse leniently).",
    )


class GroundingGuard(_Guard):
    action: Literal["block", "flag", "off"] = "flag"
    threshold: float = Field(default=0.5, ge=0, le=1, description="Groundedness below which the answer is flagged or blocked.")
    support: float = Field(default=0.6, gt=0, le=1, description="Share of a sentence's words a chunk must hold to support it.")


class GuardPolicy(BaseModel):
    """Every guard's configuration for one route (or the stack default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    pii: PIIGuard = PIIGuard()
    secrets: SecretsGuard = SecretsGuard()
    injection: InjectionGuard = InjectionGuard()
    context_injection: ContextInjectionGuard = ContextInjectionGuard()
    topics: TopicsGuard = TopicsGuard(action="off")
    # Off by default: trained on 2017 tweets, English only, with a documented label bias (docs/guardrails.md).
    toxicity: ToxicityGuard = ToxicityGuard(action="off")
    pii_leak: PIILeakGuard = PIILeakGuard()
    canary: CanaryGuard = CanaryGuard()
    json_schema: SchemaGuard = SchemaGuard()
    grounding: GroundingGuard = GroundingGuard()

    @field_validator("*", mode="before")
    @classmethod
    def _action_shorthand(cls, v: Any) -> Any:
        return {"action": v} if isinstance(v, str) else v

    def active(self, guard: str) -> bool:
        cfg = getattr(self, guard)
        return bool(self.enabled and cfg.on)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        if isinstance(value, str) and isinstance(old, Mapping):
            out[key] = {**old, "action": value}
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = {**old, **value}
        elif isinstance(value, Mapping) and isinstance(old, str):
            out[key] = {"action": old, **value}
        else:
            out[key] = value
    return out


def build_policy(defaults: Mapping[str, Any], override: Mapping[str, Any] | None = None, *, prefix: str = "guards") -> GuardPolicy:
    """The policy from the ``[guards]`` defaults with a route's ``guards`` table merged over them."""
    table = _merge(defaults, override or {})
    try:
        return GuardPolicy.model_validate(table)
    except ValidationError as exc:
        raise config_error(exc, GuardPolicy, source="aiestack.toml", prefix=prefix) from None


def build_policies(
    defaults: Mapping[str, Any], routes: Mapping[str, Mapping[str, Any]]
) -> tuple[GuardPolicy, dict[str, GuardPolicy]]:
    """The default policy and one per route that has a ``guards`` table (others use the default)."""
    default = build_policy(defaults)
    per_route: dict[str, GuardPolicy] = {}
    for name, route in routes.items():
        guards = route.get("guards") or {}
        if not isinstance(guards, Mapping):
            raise ConfigError(f"routes.{name}.guards", "must be a table", f"write [routes.{name}.guards] with one key per guard")
        if guards:
            per_route[name] = build_policy(defaults, guards, prefix=f"routes.{name}.guards")
    return default, per_route
