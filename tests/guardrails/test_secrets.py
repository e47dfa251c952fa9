"""Secrets: provider key formats, JWTs, private keys, and context-named high-entropy values."""

from __future__ import annotations

import pytest

from aiestack.guardrails.secrets import SecretsDetector, entropy
from aiestack.types import Finding

pytestmark = pytest.mark.unit

# Shapes of real keys, built at run time from pieces (none of these is a live key).
ALNUM = "A1b2C3d4E5f6G7h8J9k0L1m2N3p4Q5r6S7t8U9v0"


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        ("sk-proj-" + ALNUM + "xYz_-12", "OPENAI_KEY"),
        ("sk-ant-api03-" + ALNUM + ALNUM[:20], "ANTHROPIC_KEY"),
        ("AKIA" + "IOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID"),
        ("ghp_" + ALNUM[:36], "GITHUB_TOKEN"),
        ("xoxb-" + "123456789012-" + ALNUM[:24], "SLACK_TOKEN"),
        ("sk_" + "live_" + ALNUM[:24], "STRIPE_KEY"),
        ("AIza" + ALNUM[:35], "GOOGLE_API_KEY"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "JWT"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + ALNUM + "\n-----END RSA PRIVATE KEY-----", "PRIVATE_KEY"),
    ],
)
def test_provider_formats(secret: str, kind: str) -> None:
    text = f"here it is: {secret} thanks"
    (finding,) = SecretsDetector().detect(text)
    assert finding.kind == kind
    assert text[finding.start or 0 : finding.end or 0] == secret


def test_generic_secret_needs_a_context_word_and_entropy() -> None:
    detector = SecretsDetector()
    value = "q8Zr2LmX9vTb4NwK7pYe"
    found = detector.detect(f'config: api_key = "{value}"')
    assert [f.kind for f in found] == ["GENERIC_SECRET"]
    assert detector.detect(f"the value {value} alone") == []  # no context word
    assert detector.detect('password = "aaaaaaaaaaaaaaaa"') == []  # no entropy
    assert detector.detect("password: your_password_here") == []  # a placeholder


def test_bearer_tokens() -> None:
    found = SecretsDetector().detect("Authorization: Bearer Zx81kLm0Qp7Rt5Vw3Yb9Nc2D")
    assert [f.kind for f in found] == ["GENERIC_SECRET"]


def test_ordinary_text_and_hashes_without_context_pass() -> None:
    text = (
        "The commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it; the uuid "
        "123e4567-e89b-12d3-a456-426614174000 names the run. Skip the task and ask-me-later."
    )
    assert SecretsDetector().detect(text) == []


def test_entropy() -> None:
    assert entropy("aaaa") == 0.0
    assert entropy("abcd") == pytest.approx(2.0)


def test_the_substring_prefilter_never_skips_a_pattern_that_would_match() -> None:
    """Each pattern runs only on texts holding one of its needed substrings (``_NEEDS``): on a sample
    of every kind, alone and mixed into prose, the findings equal those of every pattern run."""
    import random

    from aiestack.guardrails import secrets

    samples = [
        "sk-proj-" + ALNUM + "xYz_-12", "sk-ant-api03-" + ALNUM + ALNUM[:20], "AKIA" + "IOSFODNN7EXAMPLE",
        "ASIA" + "IOSFODNN7EXAMPLE", "aws_secret_access_key = " + ALNUM, "AWS_SECRET_KEY: " + ALNUM,
        "ghp_" + ALNUM[:36], "github_pat_" + ALNUM[:30], "glpat-" + ALNUM[:22], "xoxb-" + "123456789012-" + ALNUM[:24],
        "https://hooks.slack.com/services/" + ALNUM[:30], "sk_" + "live_" + ALNUM[:24], "rk_" + "test_" + ALNUM[:20],
        "AIza" + ALNUM[:35], "hf_" + "abcdefghijABCDEFGHIJabcdefghijABCD", "SG." + ALNUM[:22] + "." + ALNUM + "abc",
        "SK" + "0123456789abcdef" * 2, "npm_" + ALNUM[:36],
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn" + ALNUM + "\n-----END OPENSSH PRIVATE KEY-----",
        "postgres://admin:" + "s3cr3tPassw0rd" + "@db.example.com/app", "password: " + ALNUM[:20],
    ]
    detector = secrets.SecretsDetector()

    def every_pattern(text: str) -> list[Finding]:
        needs = secrets._NEEDS
        secrets._NEEDS = {kind: ("",) for kind in needs}  # "" is in every text: no pattern skipped
        try:
            return detector.detect(text)
        finally:
            secrets._NEEDS = needs

    kinds = set()
    rng = random.Random(5)
    for sample in samples:
        found = detector.detect(sample)
        kinds |= {f.kind for f in found}
        assert found == every_pattern(sample)
        mixed = " ".join([*rng.sample(samples, 3), "a note", sample.upper(), sample.lower()])
        assert detector.detect(mixed) == every_pattern(mixed)
    assert kinds >= set(secrets._PATTERNS)  # every kind was exercised
