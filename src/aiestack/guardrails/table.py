"""The guards of each route, built once from the policy: detectors with their options applied (the guard table).

:class:`GuardTable` holds the default guards and those of each route with a ``guards`` table; the
composition root puts each route's into its :class:`~aiestack.types.RoutePlan`, and
:meth:`GuardTable.for_exchange` answers "which guards apply to this exchange" from the plan the
exchange carries (an exchange without one, outside a planned pipeline, gets the default).
It also provides :meth:`GuardTable.redact_for_trace`, the irreversible masking of PII and secrets
that the Trace stage applies to recorded content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiestack.guardrails.base import Recent
from aiestack.guardrails.injection import Embed, InjectionClassifier, InjectionDetector, Judge
from aiestack.guardrails.pii import ENTITIES, PIIDetector, mask
from aiestack.guardrails.policy import GuardPolicy, build_policies
from aiestack.guardrails.secrets import SecretsDetector
from aiestack.guardrails.topics import BannedTopics
from aiestack.guardrails.toxicity import ToxicityClassifier, ToxicityDetector
from aiestack.types import Exchange


@dataclass(frozen=True)
class Guards:
    """One policy and its ready detectors."""

    policy: GuardPolicy
    pii: PIIDetector
    secrets: SecretsDetector
    topics: BannedTopics
    injection: InjectionDetector
    context: InjectionDetector
    #: ``None`` when the policy leaves the toxicity guard off (its classifier is then never loaded).
    toxicity: ToxicityDetector | None = None
    #: The guards that are on, decided once (``active`` is asked for every guard of every exchange).
    on: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        names = type(self.policy).model_fields
        object.__setattr__(self, "on", frozenset(n for n in names if n != "enabled" and self.policy.active(n)))

    def active(self, guard: str) -> bool:
        return guard in self.on


def build_guards(
    policy: GuardPolicy,
    *,
    classifier: InjectionClassifier | None = None,
    embed: Embed | None = None,
    judge: Callable[[str], Judge] | None = None,
    toxicity: Callable[[], ToxicityClassifier] = ToxicityClassifier,
) -> Guards:
    """Detectors for ``policy``; ``judge(name)`` turns a configured judge model name into a judge,
    ``toxicity()`` gives the toxicity classifier (asked only when the policy turns that guard on)."""
    inj = policy.injection
    use_classifier = classifier if inj.classifier else None
    tox = policy.toxicity
    return Guards(
        policy=policy,
        pii=PIIDetector(policy.pii.entities, default_region=policy.pii.region),
        secrets=SecretsDetector(min_entropy=policy.secrets.min_entropy),
        topics=BannedTopics(policy.topics.terms, policy.topics.topics, min_hits=policy.topics.min_hits),
        injection=InjectionDetector(
            classifier=use_classifier,
            embed=embed if use_classifier is not None else None,
            judge=judge(inj.judge) if (judge is not None and inj.judge) else None,
            judge_min=inj.judge_min,
            threshold=inj.threshold,
            heads=inj.heads,
        ),
        context=_context_detector(policy, classifier, embed),
        toxicity=ToxicityDetector(toxicity(), threshold=tox.threshold, labels=tox.labels) if policy.active("toxicity") else None,
    )


def _context_detector(policy: GuardPolicy, classifier: InjectionClassifier | None, embed: Embed | None) -> InjectionDetector:
    """Heuristics, the indirect head per sentence, and the prompt heads the policy names for whole chunks."""
    ctx = policy.context_injection
    indirect = ctx.indirect and classifier is not None and classifier.has_indirect
    heads_on = bool(ctx.heads) and policy.injection.classifier
    return InjectionDetector(
        classifier=classifier if (indirect or heads_on) else None,
        embed=embed if heads_on else None,
        threshold=ctx.threshold,
        heads=ctx.heads,
        indirect=indirect,
    )


class TraceRedactor:
    """``redact(text)``: every PII value and secret in ``text`` masked (``<EMAIL>``, ``<OPENAI_KEY>``), irreversibly.

    What the Trace stage applies to recorded content, whatever a route's policy: it depends on no
    policy, so the composition root builds it before the guards (the side-call pipeline's Trace uses it).
    """

    def __init__(self) -> None:
        self._pii = PIIDetector(ENTITIES)
        self._secrets = SecretsDetector()
        self._seen: Recent[str] = Recent()  # a conversation is recorded again at each turn

    def __call__(self, text: str) -> str:
        known = self._seen.get(text)
        if known is not None:
            return known
        findings = self._pii.detect(text) + self._secrets.detect(text)
        return self._seen.put(text, text, mask(text, findings) if findings else text)

    def unseen(self, text: str) -> int:
        """The work masking ``text`` costs: its length, or 0 when it was masked recently."""
        return 0 if self._seen.get(text) is not None else len(text)


class GuardTable:
    """The default guards, and the guards of each route that declares its own."""

    def __init__(self, default: Guards, routes: Mapping[str, Guards] | None = None) -> None:
        self.default = default
        self.routes = dict(routes or {})
        self._redactor = TraceRedactor()

    def for_exchange(self, ex: Exchange) -> Guards:
        guards = ex.plan.part(Guards) if ex.plan is not None else None
        return guards if guards is not None else self.default

    def redact_for_trace(self, text: str) -> str:
        """``text`` with every PII value and secret masked (``<EMAIL>``, ``<OPENAI_KEY>``)."""
        return self._redactor(text)


def build_guard_table(
    defaults: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    *,
    classifier: InjectionClassifier | None = None,
    embed: Embed | None = None,
    judge: Callable[[str], Judge] | None = None,
) -> GuardTable:
    """Validate ``[guards]`` and every ``[routes.NAME.guards]`` and build their detectors."""
    default, per_route = build_policies(defaults, routes)
    loaded: list[ToxicityClassifier] = []

    def toxicity() -> ToxicityClassifier:  # loaded once, and only if a policy uses it
        if not loaded:
            loaded.append(ToxicityClassifier())
        return loaded[0]

    def build(policy: GuardPolicy) -> Guards:
        return build_guards(policy, classifier=classifier, embed=embed, judge=judge, toxicity=toxicity)

    return GuardTable(build(default), {name: build(p) for name, p in per_route.items()})
