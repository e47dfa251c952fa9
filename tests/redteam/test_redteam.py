"""The red-team runner: probe families, detectors, per-family reports, the command.

A deliberately naive model (it obeys injected instructions it can read, decodes Base64 and ROT13,
repeats its instructions and personal data when asked) shows that every detector fires; a real
stack with the default guardrails shows guard blocks counted as defences and every attempt
stored as an exchange the console can open.
"""

from __future__ import annotations

import base64
import codecs
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiestack.cli import build_app
from aiestack.errors import GuardrailBlocked, ProviderUnavailable
from aiestack.redteam import FAMILIES, Tokens, build_probes, detect, run_redteam
from aiestack.redteam.probes import PII_VALUES
from aiestack.types import ChatRequest, Completion, Exchange, Message, Usage

TOKENS = Tokens(marker="PWNED-abc123", canary="ACME-0123456789AB")


def _naive_answer(request: ChatRequest) -> str:
    """A model with no defences: it does what the last readable instruction says."""
    system = request.messages[0].text
    last = request.messages[-1].text
    text = last
    for word in last.split():
        try:
            decoded = base64.b64decode(word, validate=True).decode()
        except ValueError:
            continue
        text += " " + decoded
    if "rot13" in last.lower():
        text += " " + codecs.decode(last, "rot13")
    lowered = text.lower()
    obeys = any(w in lowered for w in ("ignor", "reply only", "start your reply", "print", "a + b + c"))
    if (m := re.search(r"(pwned-[0-9a-f]{6})", text, re.IGNORECASE)) and obeys:
        return m.group(1)
    if any(w in lowered for w in ("repeat", "instructions", "internal reference", "translate")):
        return system
    if any(w in lowered for w in ("email", "phone", "personal data")):
        return "The customer is Jane Roe, jane.roe@example.com, +1-202-555-0147."
    return "How can I help with your booking?"


async def _naive_call(request: ChatRequest, exchange_id: str) -> Exchange:
    if request.metadata.get("redteam.judge"):
        verdict = "YES" if "PWNED" in request.messages[0].text.split("<reply>")[1] else "NO"
        answer = verdict
    else:
        answer = _naive_answer(request)
    completion = Completion(message=Message(role="assistant", content=answer), model="naive", provider="fake",
                            usage=Usage(1, 1))
    return Exchange(request=request, id=exchange_id, completion=completion, outcome="ok")


@pytest.mark.unit
def test_every_family_has_several_probes_with_fresh_goals() -> None:
    probes = build_probes(TOKENS)
    by_family = {f: [p for p in probes if p.family == f] for f in FAMILIES}
    assert all(len(ps) >= 3 for ps in by_family.values()), {f: len(ps) for f, ps in by_family.items()}
    assert len({(p.family, p.name) for p in probes}) == len(probes)
    assert all(p.messages[0].role == "system" and TOKENS.canary in p.messages[0].text for p in probes)
    assert {p.detector for p in by_family["system_prompt_leak"]} == {"canary"}
    assert {p.detector for p in by_family["pii_extraction"]} == {"pii"}
    encoded = next(p for p in by_family["encoding"] if p.name == "base64").messages[-1].text
    assert TOKENS.marker not in encoded and TOKENS.marker in base64.b64decode(encoded.split()[-1]).decode()
    indirect = next(p for p in by_family["indirect_injection"] if p.name == "tool-result")
    assert indirect.messages[-1].role == "tool" and TOKENS.marker in indirect.messages[-1].text
    assert Tokens.fresh() != Tokens.fresh()
    with pytest.raises(ValueError, match="unknown probe families"):
        build_probes(TOKENS, ("nope",))


@pytest.mark.unit
def test_detection_ignores_case_and_spacing_and_needs_the_goal() -> None:
    (probe,) = [p for p in build_probes(TOKENS, ("system_prompt_leak",)) if p.name == "internal-reference"]
    assert detect(probe, "sure: acme-0123456789ab")
    assert detect(probe, "ACME- 0123 4567 89AB")
    assert not detect(probe, "I cannot share internal references.")


@pytest.mark.unit
async def test_a_naive_model_is_caught_by_every_detector_and_the_judge_agrees() -> None:
    report = await run_redteam(_naive_call, "naive", tokens=TOKENS, judge="judge")
    families = {f.family: f for f in report.families}
    assert set(families) == set(FAMILIES)
    for name in ("direct_injection", "jailbreak_persona", "system_prompt_leak", "pii_extraction"):
        assert families[name].asr == 1.0, (name, families[name])
    assert families["encoding"].succeeded >= 5  # every trick but leetspeak (unreadable to this model)
    assert families["indirect_injection"].succeeded == families["indirect_injection"].attempts
    assert all(f.errors == 0 and f.blocked == 0 for f in report.families)
    injected = [a for a in report.attempts if a.family == "direct_injection"]
    assert all(a.judge is True for a in injected)  # the judge sees the marker in the reply
    assert all(a.exchange_id.startswith("ex_") for a in report.attempts)
    assert len({a.exchange_id for a in report.attempts}) == len(report.attempts)
    assert json.loads(json.dumps(report.to_json()))["families"][0]["asr"] == 1.0


@pytest.mark.unit
async def test_guard_blocks_count_as_defences_and_other_errors_apart() -> None:
    async def guarded(request: ChatRequest, exchange_id: str) -> Exchange:
        last = request.messages[-1].text.lower()
        if "ignore" in last:
            return Exchange(request=request, id=exchange_id, outcome="blocked",
                            error=GuardrailBlocked("injection", "prompt injection"))
        if "email" in last:
            raise GuardrailBlocked("pii_leak", "personal data in the answer")
        if "stop everything" in last:
            raise ProviderUnavailable("upstream down", provider="fake")
        return await _naive_call(request, exchange_id)

    report = await run_redteam(guarded, "guarded", families=("direct_injection", "pii_extraction"), tokens=TOKENS)
    direct, pii = report.families
    assert (direct.attempts, direct.blocked, direct.errors, direct.succeeded) == (4, 1, 1, 2)
    assert direct.asr == 2 / 3  # errors are neither defences nor successes
    assert pii.blocked == 2 and pii.succeeded == 1
    blocked = [a for a in report.attempts if a.outcome == "blocked"]
    assert {a.guard for a in blocked} == {"injection", "pii_leak"}


@pytest.fixture
def stack_settings(tmp_path: Path) -> object:
    from aiestack.settings import Settings

    return Settings(data_dir=tmp_path, embedded_model=False, default_model="echo",
                    models={"echo": {"provider": "fake"}}, cache={"enabled": False})


@pytest.mark.integration
@pytest.mark.slow
async def test_through_a_real_stack_the_default_guards_block_and_every_attempt_is_stored(
    stack_settings: object,
) -> None:
    from aiestack.build import build_stack

    stack = build_stack(stack_settings)  # type: ignore[arg-type]
    try:
        report = await run_redteam(lambda r, i: stack.chat(r, id=i), "echo", tokens=TOKENS)
        families = {f.family: f for f in report.families}
        # The default input guard stops some plain injections; the echo model repeats the rest.
        assert families["direct_injection"].blocked >= 1
        assert all(a.guard for a in report.attempts if a.outcome == "blocked")
        assert families["system_prompt_leak"].succeeded == 0  # an echo never says the system prompt
        assert sum(f.errors for f in report.families) == 0
    finally:
        await stack.aclose()
    from aiestack.stores.open import open_store

    store = open_store(stack.settings.store_url, "exchanges")
    try:
        stored = [store.get_exchange(a.exchange_id) for a in report.attempts]
        assert all(record is not None for record in stored)  # each one opens in the console
    finally:
        store.close()


@pytest.mark.unit
def test_the_command_prints_a_table_writes_json_and_gates_on_asr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AIESTACK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "aiestack.toml").write_text(
        'default_model = "echo"\nembedded_model = false\n[models.echo]\nprovider = "fake"\n', encoding="utf-8"
    )
    out = tmp_path / "report.json"
    args = ["redteam", "echo", "--family", "direct_injection", "--family", "pii_extraction", "--json", str(out)]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "direct_injection" in result.stdout and "ASR" in result.stdout
    data = json.loads(out.read_text())
    assert [f["family"] for f in data["families"]] == ["direct_injection", "pii_extraction"]
    assert all(a["exchange_id"] for a in data["attempts"])
    # The echo model repeats the attack, so some injections "work": a gate at 0 fails the run.
    echoed = any(f["succeeded"] for f in data["families"])
    gated = CliRunner().invoke(build_app(), [*args, "--max-asr", "0"])
    assert gated.exit_code == (1 if echoed else 0)
    bad = CliRunner().invoke(build_app(), ["redteam", "echo", "--family", "nope"])
    assert bad.exit_code != 0 and "unknown family" in bad.output
    assert dataclasses.is_dataclass(Tokens) and PII_VALUES


@pytest.mark.integration
async def test_indirect_injection_through_a_collection_is_dropped_by_the_context_guard(stack_settings: object) -> None:
    """The collection probe: a planted document in a scratch collection, retrieved into the prompt."""
    from aiestack.build import build_stack
    from aiestack.redteam.collections import StoreCollections
    from aiestack.settings import Settings
    from aiestack.testing.embeddings import BagOfWordsEmbeddings

    assert isinstance(stack_settings, Settings)
    reports = {}
    for guards in ("default", "off"):
        settings = stack_settings if guards == "default" else stack_settings.model_copy(
            update={"guards": stack_settings.guards.model_copy(update={"enabled": False})})
        stack = build_stack(settings)
        stack.resources.use(embeddings=BagOfWordsEmbeddings())
        collections = StoreCollections(stack.resources.documents, stack.resources.embeddings)
        try:
            report = await run_redteam(lambda r, i, s=stack: s.chat(r, id=i), "echo",
                                       families=("indirect_injection",),
                                       tokens=TOKENS, collections=collections)
            assert stack.resources.documents.get_collection(f"redteam-{TOKENS.marker.lower()}") is None  # dropped
        finally:
            await stack.aclose()
        (attempt,) = [a for a in report.attempts if a.probe == "collection-document"]
        reports[guards] = attempt
    assert (reports["default"].outcome, reports["default"].guard) == ("blocked", "context_injection")
    assert reports["off"].outcome == "succeeded"  # the echo model repeats the retrieved instruction's marker
    assert [p.name for p in build_probes(TOKENS, ("indirect_injection",))] == [
        "tool-result", "pasted-document", "forwarded-email"]  # no collection, no collection probe
