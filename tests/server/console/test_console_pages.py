"""The console's pages, driven in-process: what each shows for data the test made."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest

from aiestack.evals.summary import summarize
from aiestack.feedback.imports import exchanges_from_export, import_conversations, load_export
from aiestack.stores.base import EvalResultRecord, ExchangeRecord
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR
from aiestack.types import EvalRun

from .conftest import ROUTE, Console

pytestmark = pytest.mark.unit


def rows(html: str) -> list[str]:
    """The exchange ids listed on an exchanges page, in order."""
    return re.findall(r'<tr data-exchange="([^"]+)">', html)


async def test_the_list_shows_exchanges_newest_first_and_filters_them(console: Console) -> None:
    a = (await console.chat("first question")).headers["x-aiestack-exchange-id"]
    b = (await console.chat("second question", model=ROUTE)).headers["x-aiestack-exchange-id"]
    c = (await console.chat("third question", model="fake2")).headers["x-aiestack-exchange-id"]
    page = await console.client.get("/exchanges")
    assert page.status_code == 200
    assert rows(page.text) == [c, b, a]
    assert rows((await console.client.get("/exchanges?model=fake")).text) == [a]
    assert rows((await console.client.get(f"/exchanges?route={ROUTE}")).text) == [b]
    assert rows((await console.client.get("/exchanges?outcome=error")).text) == []
    outcomes = {i: console.stack.store.get_exchange(i).outcome for i in (a, b, c)}  # type: ignore[union-attr]
    for outcome in ("ok", "cached"):  # a similar question may be answered by the semantic cache
        expected = [i for i in (c, b, a) if outcomes[i] == outcome]
        assert rows((await console.client.get(f"/exchanges?outcome={outcome}&range=1h")).text) == expected
    assert outcomes[a] == "ok"
    bad = await console.client.get("/exchanges?min_ms=fast&outcome=weird")
    assert "Ignored: min_ms must be a number" in bad.text and "Ignored: status must be one of" in bad.text
    assert rows(bad.text) == [c, b, a]


async def test_keyset_paging_walks_every_exchange_once(console: Console) -> None:
    made = [(await console.chat(f"question {i}")).headers["x-aiestack-exchange-id"] for i in range(5)]
    seen: list[str] = []
    url: str | None = "/exchanges?limit=2&model=fake"
    while url is not None:
        html = (await console.client.get(url)).text
        seen += rows(html)
        found = re.search(r'href="([^"]+)" id="next-page"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == list(reversed(made))


async def test_the_detail_page_has_the_waterfall_messages_and_answer(console: Console) -> None:
    r = await console.chat("what is the capital of France")
    exchange_id = r.headers["x-aiestack-exchange-id"]
    page = await console.client.get(f"/exchanges/{exchange_id}")
    assert page.status_code == 200
    html = page.text
    waterfall = html[html.index('data-chart="waterfall"') :]
    spans = console.stack.store.spans(exchange_id=exchange_id) or console.stack.store.spans(
        trace_id=console.stack.store.get_exchange(exchange_id).trace_id  # type: ignore[union-attr]
    )
    assert len(spans) >= 2
    for span in spans:
        assert f'data-span="{span.name}"' in waterfall
    assert "chat fake" in waterfall
    assert "what is the capital of France" in html  # the message (content tracing is on)
    assert html.count("what is the capital of France") >= 2  # and the echoed answer


async def test_hits_and_verdicts_are_shown_with_scores(console: Console) -> None:
    record = ExchangeRecord(
        id="ex_rag",
        created_at=time.time(),
        model="fake",
        outcome="ok",
        guard_action="redact",
        attributes={
            "hits": [
                {"chunk_id": "abc123", "document_id": "handbook.pdf", "position": 4, "score": 0.8731, "retriever": "hybrid", "text": "Paris is the capital."},
            ],
            "verdicts": [
                {"guard": "pii", "action": "redact", "score": None, "latency_ms": 0.7, "findings": [{"kind": "EMAIL", "label": "EMAIL_1"}]},
            ],
        },
    )
    console.stack.store.write_exchanges([record])
    html = (await console.client.get("/exchanges/ex_rag")).text
    hits = html[html.index('id="hits"') :]
    assert "handbook.pdf" in hits and "0.8731" in hits and "Paris is the capital." in hits and "hybrid" in hits
    verdicts = html[html.index('id="verdicts"') :]
    assert "pii" in verdicts and "guard-redact" in verdicts and "EMAIL: EMAIL_1" in verdicts
    listed = (await console.client.get("/exchanges?guard=redact")).text
    assert rows(listed) == ["ex_rag"]


async def test_an_unknown_exchange_is_a_404_page(console: Console) -> None:
    page = await console.client.get("/exchanges/ex_missing")
    assert page.status_code == 404 and "No exchange has the id" in page.text


async def test_feedback_given_on_an_exchange_shows_on_the_feedback_page(console: Console) -> None:
    exchange_id = (await console.chat("rate me", model=ROUTE)).headers["x-aiestack-exchange-id"]
    form = {"csrf_token": console.csrf, "thumbs": "down", "comment": "too vague", "correction": "Be precise.", "tags": "tone, facts"}
    r = await console.client.post(f"/exchanges/{exchange_id}/feedback", data=form)
    assert r.status_code == 303 and r.headers["location"].endswith("?feedback=sent#feedback")
    detail = (await console.client.get(r.headers["location"])).text
    assert "the feedback was saved" in detail and "too vague" in detail
    page = await console.client.get("/feedback")
    listing = page.text[page.text.index('id="feedback-list"') :]
    assert exchange_id[:15] in listing and "too vague" in listing and "Be precise." in listing
    by_route = page.text[page.text.index('id="rates-route"') : page.text.index('id="rates-prompt"')]
    assert ROUTE in by_route and ">0%<" in by_route  # one thumbs down: a 0% positive rate
    assert 'data-chart="bars"' in page.text
    flagged = await console.client.get("/exchanges?feedback=negative")
    assert rows(flagged.text) == [exchange_id]
    assert rows((await console.client.get("/exchanges?feedback=positive")).text) == []


async def test_feedback_without_the_csrf_token_or_content_is_refused(console: Console) -> None:
    exchange_id = (await console.chat("hello")).headers["x-aiestack-exchange-id"]
    forged = await console.client.post(f"/exchanges/{exchange_id}/feedback", data={"thumbs": "up"})
    assert forged.status_code == 403
    empty = await console.client.post(f"/exchanges/{exchange_id}/feedback", data={"csrf_token": console.csrf})
    assert empty.status_code == 400 and "says nothing" in empty.text
    assert console.stack.store.list_feedback(exchange_id=exchange_id) == []  # type: ignore[attr-defined]


async def test_the_dashboard_draws_every_chart_and_the_heatmap(console: Console) -> None:
    for i in range(3):
        await console.chat(f"count me {i}")
    page = await console.client.get("/dashboard?period=1h")
    assert page.status_code == 200
    for name in ("requests", "latency", "ttft", "tokens", "cost", "cache", "guards"):
        assert f'data-name="{name}"' in page.text
    assert page.text.count('data-chart="line"') == 3 and page.text.count('data-chart="bars"') == 4
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert f'data-date="{today}" data-count="3"' in page.text
    assert "3 requests" in page.text


async def test_the_playground_offers_every_model_and_route(console: Console) -> None:
    page = (await console.client.get("/playground")).text
    options = re.findall(r'<option value="([^"]+)"', page)
    assert set(options) == {"fake", "fake2", ROUTE}
    assert options[0] == "fake"  # the default model first
    assert 'src="/static/console/console.js"' in page


def _run(run_id: str, started: float, scores: dict[str, list[float]]) -> tuple[EvalRun, list[EvalResultRecord]]:
    results = [
        EvalResultRecord(run_id, f"q{i}", system, f"answer {i}", {"exact": v}, latency_ms=10.0 + i, created_at=started)
        for system, values in scores.items()
        for i, v in enumerate(values)
    ]
    summaries = summarize(results, {"exact": True}, iterations=200)
    summary = {
        "status": "finished",
        "metrics": {"exact": {"higher_is_better": True}},
        "systems": {name: s.as_dict() for name, s in summaries.items()},
    }
    run = EvalRun(run_id, "qa-suite", tuple(scores), started_at=started, finished_at=started + 5, summary=summary)
    return run, results


async def test_evals_show_runs_leaderboards_comparisons_and_the_report(console: Console) -> None:
    store = console.stack.store
    now = time.time()
    base, base_results = _run("run_a", now - 100, {"small": [0, 1, 0, 1, 0, 0], "large": [1, 1, 0, 1, 1, 0]})
    cand, cand_results = _run("run_b", now, {"small": [1, 1, 1, 1, 0, 1], "large": [1, 1, 1, 1, 1, 1]})
    for run, results in ((base, base_results), (cand, cand_results)):
        store.write_eval_run(run)  # type: ignore[attr-defined]
        store.write_eval_results(results)  # type: ignore[attr-defined]
    listing = (await console.client.get("/evals")).text
    assert "qa-suite" in listing and "run_a" in listing and "run_b" in listing
    board = listing[listing.index("Leaderboards") : listing.index('id="runs"')]
    assert board.index("large") < board.index("small")  # best first on the latest run
    assert "<svg" in board
    detail = (await console.client.get("/evals/run_b")).text
    assert 'id="leaderboard"' in detail and detail.count("<svg") >= 2  # the metric's bars and the latency histogram
    compared = (await console.client.get("/evals/compare?a=run_a&b=run_b")).text
    deltas = compared[compared.index('id="deltas"') :]
    assert "+0.500" in deltas and "+0.333" in deltas  # small: 2/6 → 5/6, large: 4/6 → 6/6
    report = await console.client.get("/evals/run_b/report")
    assert report.status_code == 200 and report.text.startswith("<!DOCTYPE html>")
    assert "script-src" not in report.headers["content-security-policy"]
    assert (await console.client.get("/evals/nope")).status_code == 404


async def test_prompts_show_versions_labels_usage_and_diffs(console: Console) -> None:
    store = console.stack.store
    store.push_prompt("support", "You are helpful.\nAnswer briefly.", created_at=time.time() - 60)  # type: ignore[attr-defined]
    store.push_prompt("support", "You are helpful.\nAnswer in detail.\nCite sources.", created_at=time.time())  # type: ignore[attr-defined]
    store.set_label("support", "production", 2, at=time.time())  # type: ignore[attr-defined]
    store.write_exchanges(
        [
            ExchangeRecord(f"ex_p{i}", time.time(), "fake", "ok", attributes={PROMPT_NAME_ATTR: "support", PROMPT_VERSION_ATTR: 2})
            for i in range(3)
        ]
    )
    listing = (await console.client.get("/prompts")).text
    assert "support" in listing and "production → v2" in listing
    page = (await console.client.get("/prompts/support")).text
    versions = page[page.index('id="versions"') : page.index('id="diff"')]
    v2 = versions[versions.index("<td>v2</td>") : versions.index("<td>v1</td>")]
    assert "production" in v2 and '<td class="num">3</td>' in v2
    diff = page[page.index('id="diff"') :]
    assert '<span class="d-del">-Answer briefly.</span>' in diff
    assert '<span class="d-add">+Cite sources.</span>' in diff
    assert (await console.client.get("/prompts/unknown")).status_code == 404


async def test_data_is_escaped_everywhere(console: Console) -> None:
    hostile = "<script>alert(1)</script>"
    console.stack.store.write_exchanges(
        [ExchangeRecord("ex_xss", time.time(), hostile, "ok", tenant=hostile, response=hostile, request={"messages": [{"role": "user", "parts": [{"type": "text", "content": hostile}]}]})]
    )
    for path in ("/exchanges", "/exchanges/ex_xss", "/dashboard"):
        html = (await console.client.get(path)).text
        assert hostile not in html, path
    assert "&lt;script&gt;" in (await console.client.get("/exchanges/ex_xss")).text


async def test_real_guard_verdicts_are_listed_and_filterable(console: Console) -> None:
    """With the default guard policy, an email in the request is redacted: the console shows it."""
    plain = (await console.chat("nothing personal here")).headers["x-aiestack-exchange-id"]
    personal = (await console.chat("mail me at bob@example.com")).headers["x-aiestack-exchange-id"]
    assert rows((await console.client.get("/exchanges?guard=redact")).text) == [personal]
    assert rows((await console.client.get("/exchanges?guard=any")).text) == [personal]
    assert plain in rows((await console.client.get("/exchanges")).text)
    detail = (await console.client.get(f"/exchanges/{personal}")).text
    verdicts = detail[detail.index('id="verdicts"') :]
    assert "pii" in verdicts and "guard-redact" in verdicts and "EMAIL" in verdicts
    assert "bob@example.com" not in detail  # the recorded request is the redacted one


async def test_the_heatmap_draws_imported_conversations_by_year(console: Console) -> None:
    """Imported ChatGPT conversations are exchanges: the calendar of their year counts them per day."""
    export = Path(__file__).resolve().parents[2] / "feedback" / "fixtures" / "chatgpt_conversations.json"
    stats = import_conversations(console.stack.store, export)  # type: ignore[arg-type]
    assert stats.exchanges > 0 and stats.first is not None
    expected: dict[str, int] = {}
    for record in exchanges_from_export(load_export(export), source="chatgpt"):
        day = dt.datetime.fromtimestamp(record.created_at, dt.UTC).date().isoformat()
        expected[day] = expected.get(day, 0) + 1
    year = dt.datetime.fromtimestamp(stats.first, dt.UTC).year
    page = (await console.client.get(f"/dashboard?year={year}")).text
    assert f'<option value="{year}" selected>' in page
    for day, count in expected.items():
        if day.startswith(str(year)):
            assert f'data-date="{day}" data-count="{count}"' in page
    assert re.search(rf'data-date="{year}-12-31" data-count="\d+"', page)  # the calendar ends with the year


async def test_the_playground_offers_registered_prompts_as_system_prompts(console: Console) -> None:
    store = console.stack.store
    store.push_prompt("greeter", "Greet <b>{{ name }}</b> warmly.", created_at=time.time())  # type: ignore[attr-defined]
    store.set_label("greeter", "production", 1, at=time.time())  # type: ignore[attr-defined]
    page = (await console.client.get("/playground")).text
    prompt_select = page[page.index('<select name="prompt">') :]
    prompt_select = prompt_select[: prompt_select.index("</select>")]
    refs = re.findall(r'<option value="([^"]+)" data-template="([^"]*)"', prompt_select)
    assert refs == [
        ("greeter@production", "Greet &lt;b&gt;{{ name }}&lt;/b&gt; warmly."),
        ("greeter@v1", "Greet &lt;b&gt;{{ name }}&lt;/b&gt; warmly."),
    ]
