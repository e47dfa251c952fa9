"""Guardrails: input and output checks with a per-route policy (see docs/guardrails.md).

Input: PII (reversible redaction), secrets, prompt injection and jailbreaks (heuristics, a packaged
classifier, an optional judge model), banned topics. Output: PII leak, system-prompt leak (canary),
JSON-schema validation with re-ask, groundedness against the retrieved context, banned topics.
Retrieved chunks are checked for indirect injection before they reach the model.
"""

from aiestack.guardrails.base import GuardAction, header_value
from aiestack.guardrails.factory import Guardrails, build_guardrails
from aiestack.guardrails.injection import InjectionClassifier, InjectionDetector, ModelJudge
from aiestack.guardrails.input import ContextGuard, InputGuard
from aiestack.guardrails.output import OutputGuard
from aiestack.guardrails.pii import PIIDetector, Vault
from aiestack.guardrails.policy import GuardPolicy, build_policy
from aiestack.guardrails.secrets import SecretsDetector
from aiestack.guardrails.table import Guards, GuardTable, TraceRedactor, build_guard_table

__all__ = [
    "ContextGuard",
    "GuardAction",
    "GuardPolicy",
    "GuardTable",
    "Guardrails",
    "Guards",
    "InjectionClassifier",
    "InjectionDetector",
    "InputGuard",
    "ModelJudge",
    "OutputGuard",
    "PIIDetector",
    "SecretsDetector",
    "TraceRedactor",
    "Vault",
    "build_guard_table",
    "build_guardrails",
    "build_policy",
    "header_value",
]
