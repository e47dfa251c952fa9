"""The console in headless Chromium: log in, exchanges, waterfall, feedback, streaming playground, charts.

A real uvicorn server on 127.0.0.1 serves a stack on the fake model (streaming word by word with a
small delay, so that incremental rendering can be seen). Chromium is the system one at
``/usr/bin/chromium`` (never ``playwright install``); without it these tests FAIL with the command
that installs it, which ``scripts/test`` runs in CI. Screenshots of the main pages go to
``$AIESTACK_TEST_ARTIFACTS`` (default ``test-artifacts/console``, git-ignored).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_sync

from aiestack.build import build_stack, open_stack
from aiestack.evals.datasets import load_examples
from aiestack.evals.report_html import render_html
from aiestack.evals.runner import EvalRunner
from aiestack.evals.suite import parse_suite
from aiestack.evals.summary import summaries_from_run
from aiestack.server.app import create_app
from aiestack.settings import GuardSettings, Settings, TracingSettings
from aiestack.stores.base import EvalStore

from ..conftest import ADMIN, ADMIN_KEY, Live, serve, settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
STREAM_TEXT = "one two three four five six seven eight nine ten"


def artifacts_dir() -> Path:
    root = os.environ.get("AIESTACK_TEST_ARTIFACTS")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "test-artifacts"
    path = base / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser_settings(data_dir: Path) -> Settings:
    # Guards off: the default output guards (pii_leak, canary) buffer a whole streamed answer
    # before releasing it, which would hide the incremental rendering these tests check.
    s = settings(data_dir, tracing=TracingSettings(content=True), guards=GuardSettings(enabled=False))
    s.models["fake"] = {"provider": "fake", "delay_s": 0.04}
    s.models["fake2"] = {"provider": "fake", "delay_s": 0.02}
    return s


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    app = create_app(lambda: build_stack(browser_settings(tmp_path)))
    with serve(app) as server:
        yield server


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A page in a fresh Chromium profile; fails (never skips) when Chromium is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the console's browser tests need it. "
            "Install it with `apt-get install -y chromium chromium-driver` (scripts/test does this in CI)."
        )
    with playwright_sync.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(15_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def log_in(page: Any, live: Live, path: str = "/exchanges") -> None:
    page.goto(live.url + path)
    assert "/login" in page.url  # an anonymous visitor is sent to the login page
    page.fill('input[name="key"]', ADMIN_KEY)
    page.click('button[type="submit"]')
    page.wait_for_url(live.url + path)


def chat(live: Live, text: str, model: str = "fake") -> str:
    r = httpx.post(
        f"{live.base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers=ADMIN,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-aiestack-exchange-id"]


def test_exchanges_waterfall_and_feedback(live: Live, page: Any) -> None:
    made = [chat(live, "browser question one"), chat(live, "browser question two", model="fake2")]
    assert live.stack.writer.flush(timeout=10)
    log_in(page, live)
    listed = page.locator("#exchange-list tbody tr[data-exchange]")
    assert listed.evaluate_all("rows => rows.map(r => r.dataset.exchange)") == list(reversed(made))
    page.screenshot(path=str(artifacts_dir() / "exchanges.png"), full_page=True)

    page.click(f'a[href="/exchanges/{made[0]}"]')
    page.wait_for_url(f"{live.url}/exchanges/{made[0]}")
    waterfall = page.locator('#waterfall svg[data-chart="waterfall"]')
    assert waterfall.is_visible()
    bars = waterfall.locator("g.span rect")
    assert bars.count() >= 2  # the exchange's root span and its stages
    widths = [b.bounding_box()["width"] for b in bars.all()]
    assert max(widths) > 100  # the root span spans the chart
    assert page.locator(".messages").inner_text().count("browser question one") >= 2  # asked and echoed
    page.screenshot(path=str(artifacts_dir() / "exchange.png"), full_page=True)

    page.check('#feedback-form input[name="thumbs"][value="down"]')
    page.fill('#feedback-form input[name="comment"]', "browser says: too short")
    page.fill('#feedback-form input[name="tags"]', "length")
    page.click('#feedback-form button[type="submit"]')
    page.wait_for_selector("text=the feedback was saved")
    assert "browser says: too short" in page.locator("#feedback-list").inner_text()

    page.click('nav a[href="/feedback"]')
    page.wait_for_url(f"{live.url}/feedback")
    latest = page.locator("#feedback-list").inner_text()
    assert "browser says: too short" in latest and made[0][:15] in latest
    page.screenshot(path=str(artifacts_dir() / "feedback.png"), full_page=True)


_RECORD_STREAM = """
() => {
  window.__lengths = [];
  const output = document.querySelector('.pane[data-pane="1"] .output');
  new MutationObserver(() => {
    const answer = output.querySelector('.turn.assistant');
    if (answer) window.__lengths.push(answer.textContent.length);
  }).observe(output, {childList: true, subtree: true, characterData: true});
}
"""


def test_playground_streams_incrementally_and_side_by_side(live: Live, page: Any) -> None:
    prompts = live.stack.store
    prompts.push_prompt("terse", "Answer in {{ words }} words.", created_at=time.time())  # type: ignore[attr-defined]
    prompts.set_label("terse", "production", 1, at=time.time())  # type: ignore[attr-defined]
    log_in(page, live, "/playground")
    page.evaluate(_RECORD_STREAM)
    page.fill('textarea[name="message"]', STREAM_TEXT)
    page.click("#send")
    page.wait_for_selector('.pane[data-pane="1"] .meta a', timeout=20_000)
    answer = page.locator('.pane[data-pane="1"] .turn.assistant').inner_text()
    assert answer == STREAM_TEXT  # the fake model echoes
    lengths = page.evaluate("window.__lengths")
    partial = {n for n in lengths if 0 < n < len(STREAM_TEXT)}
    assert len(partial) >= 3, f"the answer did not arrive incrementally: {lengths}"
    assert lengths == sorted(lengths)  # it only grows
    assert "TTFT" in page.locator('.pane[data-pane="1"] .meta').inner_text()

    page.check("#compare")
    assert page.locator('.pane[data-pane="2"]').is_visible()
    page.select_option('.pane[data-pane="2"] select[name="model"]', "fake2")
    page.select_option('.pane[data-pane="2"] select[name="prompt"]', "terse@production")
    system = page.locator('.pane[data-pane="2"] textarea[name="system"]')
    assert system.input_value() == "Answer in {{ words }} words."  # the registered template, to edit
    system.fill("Be brief.")
    page.fill('textarea[name="message"]', "side by side")
    page.click("#send")
    page.wait_for_function(
        "() => document.querySelectorAll('.pane .meta a').length === 2 && "
        "document.querySelectorAll('.pane[data-pane=\"1\"] .turn.assistant').length === 2",
        timeout=20_000,
    )
    right = page.locator('.pane[data-pane="2"] .turn.assistant').last.inner_text()
    assert right == "side by side"
    page.screenshot(path=str(artifacts_dir() / "playground.png"), full_page=True)
    assert live.stack.writer.flush(timeout=10)
    models = {r.model for r in live.stack.store.list_exchanges(limit=10)}
    assert models == {"fake", "fake2"}  # playground exchanges are ordinary, stored exchanges


def test_metrics_charts_and_heatmap(live: Live, page: Any) -> None:
    for i in range(3):
        chat(live, f"metric probe {i}")
    assert live.stack.writer.flush(timeout=10)
    log_in(page, live, "/dashboard")
    line = page.locator('svg[data-chart="line"]').first
    assert line.is_visible()
    assert page.locator('[data-name="latency"] svg circle').count() >= 1  # a latency point was drawn
    today = dt.datetime.now(dt.UTC).date().isoformat()
    cell = page.locator(f'#heatmap rect.day[data-date="{today}"]')
    assert cell.is_visible()
    assert cell.get_attribute("data-count") == "3"
    assert cell.get_attribute("fill") != "#ebedf0"  # coloured: there was activity
    page.screenshot(path=str(artifacts_dir() / "dashboard.png"), full_page=True)
    for path, name in (("/evals", "evals"), ("/prompts", "prompts")):
        page.goto(live.url + path)
        assert page.locator("h1").inner_text() in ("Evals", "Prompts")
        page.screenshot(path=str(artifacts_dir() / f"{name}.png"), full_page=True)


async def _small_eval_run(data_dir: Path) -> str:
    """Run a 6-example suite on two fake systems into the store under ``data_dir``; the report HTML."""
    rows = [{"id": f"q{i}", "q": f"w{i}", "a": f"w{i}" if i % 2 else "other"} for i in range(6)]
    (data_dir / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    suite = parse_suite(
        {
            "name": "browser-suite",
            "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
            "prompt": "{{ input }}",
            "systems": [{"name": "left", "model": "fake"}, {"name": "right", "model": "fake2"}],
            "metrics": [{"name": "contains"}, {"name": "latency"}],
        },
        base_dir=data_dir,
    )
    async with open_stack(browser_settings(data_dir)) as stack:
        assert isinstance(stack.store, EvalStore)
        result = await EvalRunner(stack.chat, stack.store, judge=stack.side_calls.caller("eval.judge")).run(suite, load_examples(suite.dataset, suite.dataset_path))
        return render_html(result.run, summaries_from_run(result.run.summary), result.results)


def test_the_eval_html_report_opens_and_shows_its_charts(live: Live, page: Any, tmp_path: Path) -> None:
    # Sync Playwright owns this thread's event loop: the run gets its own thread (and loop). It
    # shares the live server's data directory, so the console reads the same run below.
    with ThreadPoolExecutor(1) as pool:
        html = pool.submit(asyncio.run, _small_eval_run(tmp_path)).result(timeout=120)
    report = artifacts_dir() / "eval-report.html"
    report.write_text(html, encoding="utf-8")
    page.goto(report.as_uri())
    assert page.locator("h1").inner_text() == "Evaluation: browser-suite"
    charts = page.locator(".chart svg")
    assert charts.count() >= 2  # the metric's bars and the latency histogram
    for chart in charts.all():
        box = chart.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 40
    assert page.locator(".chart svg rect").count() >= 2  # bars were drawn
    page.screenshot(path=str(artifacts_dir() / "eval-report.png"), full_page=True)

    log_in(page, live, "/evals")  # the console reads the same run from the store
    assert "browser-suite" in page.locator("main").inner_text()
    page.click("#runs tbody a >> nth=0")
    assert page.locator("#charts svg").count() >= 2
    page.screenshot(path=str(artifacts_dir() / "eval-run.png"), full_page=True)
