"""Importing ChatGPT and Claude exports as exchanges (synthetic fixtures, no personal data)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from aiestack.errors import InvalidRequest
from aiestack.feedback import chat_messages, detect, import_conversations, load_export
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"
CHATGPT = FIXTURES / "chatgpt_conversations.json"
CLAUDE = FIXTURES / "claude_conversations.json"


def test_chatgpt_export_follows_the_shown_branch() -> None:
    store = MemoryExchangeStore()
    stats = import_conversations(store, CHATGPT, tenant="me")
    assert (stats.source, stats.conversations, stats.exchanges, stats.skipped_conversations) == ("chatgpt", 2, 3, 1)
    records = sorted(store.list_exchanges(limit=10), key=lambda r: r.created_at)
    assert [r.response for r in records] == [
        "Usually 4 to 12 hours at room temperature.",
        "Up to 48 hours in the fridge.",  # the branch current_node shows, not the regenerated-away one
        "Steam curls from the cup",
    ]
    assert [r.created_at for r in records] == [1735725605.0, 1735725800.0, 1738404003.0]
    assert {(r.model, r.tenant, r.outcome, r.provider) for r in records} == {("import:chatgpt", "me", "ok", "import")}
    second = records[1]
    assert chat_messages(second.request) == [
        {"role": "user", "content": "How long should sourdough proof?"},
        {"role": "assistant", "content": "Usually 4 to 12 hours at room temperature."},
        {"role": "user", "content": "And in the fridge?"},  # the image part is left out, the hidden system one too
    ]
    assert second.attributes["aiestack.import.model"] == "gpt-4o-mini"
    assert second.attributes["aiestack.import.title"] == "Synthetic: bread baking"
    haiku = records[2]
    assert chat_messages(haiku.request) == [{"role": "user", "content": "Write a haiku about tea."}]  # no tool message


def test_claude_export_reads_text_and_content_parts() -> None:
    store = MemoryExchangeStore()
    stats = import_conversations(store, CLAUDE)
    assert (stats.source, stats.conversations, stats.exchanges, stats.skipped_conversations) == ("claude", 1, 2, 1)
    records = sorted(store.list_exchanges(limit=10), key=lambda r: r.created_at)
    assert [r.response for r in records] == ["Water, layers, a map and snacks.", "A rain shell and \ndry bags."]
    assert records[0].created_at == 1741597209.0  # 2025-03-10T09:00:09Z
    messages = chat_messages(records[1].request)
    assert messages is not None and messages[-1] == {"role": "user", "content": "And for rain?"}
    assert {r.model for r in records} == {"import:claude"}


def test_reimporting_is_idempotent_and_feeds_usage_by_day(tmp_path: Path) -> None:
    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'aiestack.db'}")
    store.migrate()
    try:
        import_conversations(store, CLAUDE)
        import_conversations(store, CLAUDE)
        import_conversations(store, CHATGPT)
        import_conversations(store, CHATGPT)
        assert len(store.list_exchanges(limit=100)) == 5
        days = store.usage_summary(by=("day", "model"))
        assert [(r.day, r.model, r.requests) for r in days] == [
            ("2025-01-01", "import:chatgpt", 2),
            ("2025-02-01", "import:chatgpt", 1),
            ("2025-03-10", "import:claude", 1),
            ("2025-03-11", "import:claude", 1),
        ]
    finally:
        store.close()


def test_a_zip_export_is_read(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("chat.html", "<html></html>")
        z.writestr("conversations.json", CLAUDE.read_text(encoding="utf-8"))
    assert detect(load_export(archive)) == "claude"
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other.json", "[]")
    with pytest.raises(InvalidRequest, match=r"without a conversations\.json"):
        load_export(empty)


def test_other_files_are_refused_with_a_hint(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"foo": 1}]), encoding="utf-8")
    with pytest.raises(InvalidRequest, match="neither a ChatGPT nor a Claude") as err:
        detect(load_export(other))
    assert "Export" in (err.value.hint or "")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(InvalidRequest, match="Cannot read"):
        load_export(broken)
