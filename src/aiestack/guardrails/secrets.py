"""Secrets: API keys, tokens and private keys, by their published formats plus an entropy rule.

Each provider pattern matches the documented shape of its keys (prefix, alphabet, length). A
*generic* secret is a long, high-entropy token right after a word that says it is one
(``api_key = ...``, ``password: ...``, ``Authorization: Bearer ...``): entropy alone flags hashes and
ids, a context word alone flags prose. Findings carry the kind (``OPENAI_KEY``, ``JWT``, ...) and a
span, never the value.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping

from aiestack.guardrails.base import holds_one, without_overlaps
from aiestack.types import Finding

_PATTERNS: Mapping[str, re.Pattern[str]] = {
    "PRIVATE_KEY": re.compile(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"
        r"[\s\S]*?(?:-----END (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
    "ANTHROPIC_KEY": re.compile(r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{40,}"),
    "OPENAI_KEY": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}(?:T3BlbkFJ[A-Za-z0-9_-]{16,})?"),
    "AWS_ACCESS_KEY_ID": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    "AWS_SECRET_KEY": re.compile(
        r"(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
    ),
    "GITHUB_TOKEN": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    "GITLAB_TOKEN": re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
    "SLACK_TOKEN": re.compile(r"\bxox[abposr]-(?:\d+-)?[A-Za-z0-9-]{10,}\b"),
    "SLACK_WEBHOOK": re.compile(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}"),
    "STRIPE_KEY": re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),
    "GOOGLE_API_KEY": re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    "HUGGINGFACE_TOKEN": re.compile(r"\bhf_[A-Za-z]{34}\b"),
    "SENDGRID_KEY": re.compile(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),
    "TWILIO_KEY": re.compile(r"\bSK[0-9a-f]{32}\b"),
    "NPM_TOKEN": re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # The scheme is bounded (RFC 3986 allows any length; real ones are short): unbounded, a long run of
    # scheme characters without "://" is re-scanned from every start, quadratic in its length.
    "URL_CREDENTIALS": re.compile(r"\b[a-z][a-z0-9+.-]{0,31}://[^\s:/@]{1,64}:([^\s:/@]{3,128})@[^\s/]+"),
}
#: Per pattern, substrings of which a match must contain one (in the text as written; for the
#: case-insensitive AWS secret rule, in lower case): a pattern runs only on a text that has one. A new
#: prompt is checked once, and 17 scans of it were most of this detector's cost.
_NEEDS: Mapping[str, tuple[str, ...]] = {
    "PRIVATE_KEY": ("-----BEGIN ",),
    "ANTHROPIC_KEY": ("sk-ant-",),
    "OPENAI_KEY": ("sk-",),
    "AWS_ACCESS_KEY_ID": ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"),
    "AWS_SECRET_KEY": ("secret",),
    "GITHUB_TOKEN": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "GITLAB_TOKEN": ("glpat-",),
    "SLACK_TOKEN": ("xox",),
    "SLACK_WEBHOOK": ("https://hooks.slack.com/",),
    "STRIPE_KEY": ("_live_", "_test_"),
    "GOOGLE_API_KEY": ("AIza",),
    "HUGGINGFACE_TOKEN": ("hf_",),
    "SENDGRID_KEY": ("SG.",),
    "TWILIO_KEY": ("SK",),
    "NPM_TOKEN": ("npm_",),
    "JWT": ("eyJ",),
    "URL_CREDENTIALS": ("://",),
}
_LOWER_CASE_NEEDS = frozenset({"AWS_SECRET_KEY"})
assert set(_NEEDS) == set(_PATTERNS)
#: A value after a word that names it a secret: ``api_key="..."``, ``password: ...``, ``Bearer ...``.
_CONTEXT = re.compile(
    r"(?i)(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd"
    r"|client[_-]?secret|private[_-]?key|credentials?)[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?([^\s\"',;]{8,})"
    r"|\b(?:Bearer|Basic)\s+([A-Za-z0-9._~+/=-]{16,})"
)
#: Substrings of which a match of :data:`_CONTEXT` holds one (in lower case): each of its names contains
#: one (``api_key``/``apikey`` "api"; ``access_token``, ``auth_token`` "token"; ``client_secret``
#: "secret"; ``passwd`` "passw"), as do ``Bearer`` and ``Basic``. The pattern ignores case, and Python's
#: case-insensitive matching also folds four non-ASCII letters onto ASCII ones (``ſ`` onto ``s``, the
#: Kelvin sign onto ``k``, ``ı`` and ``İ`` onto ``i``), which ``str.lower`` does not: the look-up
#: decides only for ASCII text, and other text is always scanned.
_CONTEXT_NEEDS = ("api", "secret", "token", "passw", "pwd", "private", "credential", "bearer", "basic")
#: Prefixes/values that look like secrets but are placeholders.
_PLACEHOLDER_VALUE = re.compile(r"(?i)^(?:x+|\*+|<[^>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|your[_-].*|changeme|password|example.*)$")


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


class SecretsDetector:
    """Finds API keys, tokens, private keys and context-named high-entropy values.

    ``min_entropy`` (bits per character) and ``min_length`` gate the generic, context-named rule.
    """

    name = "secrets"

    def __init__(self, *, min_entropy: float = 3.0, min_length: int = 12) -> None:
        self.min_entropy = min_entropy
        self.min_length = min_length

    def detect(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        lower = text.lower()
        for kind, pattern in _PATTERNS.items():
            within = lower if kind in _LOWER_CASE_NEEDS else text
            if not holds_one(within, _NEEDS[kind]):
                continue
            for m in pattern.finditer(text):
                start, end = (m.start(1), m.end(1)) if pattern.groups else (m.start(), m.end())
                found.append(Finding(kind=kind, start=start, end=end, score=1.0, label=kind))
        if text.isascii() and not holds_one(lower, _CONTEXT_NEEDS):
            return without_overlaps(found)  # no name of a secret: the generic rule cannot match
        for m in _CONTEXT.finditer(text):
            group = 1 if m.group(1) is not None else 2
            value = m.group(group)
            if len(value) < self.min_length or _PLACEHOLDER_VALUE.match(value):
                continue
            h = entropy(value)
            if h < self.min_entropy or not (any(c.isdigit() for c in value) or h >= 4.0):
                continue
            found.append(Finding(kind="GENERIC_SECRET", start=m.start(group), end=m.end(group), score=min(1.0, h / 5), label="GENERIC_SECRET"))
        return without_overlaps(found)
