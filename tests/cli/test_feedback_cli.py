"""``aiestack feedback export`` and ``aiestack import-conversations`` driven as a user would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aiestack.cli.app import build_app
from aiestack.feedback import explicit_feedback
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_sql import SqlExchangeStore

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "feedback" / "fixtures"


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


@pytest.fixture
def store(workdir: Path) -> Iterator[SqlExchangeStore]:
    store = SqlExchangeStore(f"sqlite:///{workdir / 'data' / 'aiestack.db'}")
    store.migrate()
    yield store
    store.close()


def test_import_conversations_twice_stores_each_turn_once(store: SqlExchangeStore) -> None:
    result = run("import-conversations", str(FIXTURES / "chatgpt_conversations.json"), "--tenant", "me")
    assert result.exit_code == 0, result.output
    assert "Imported 3 new exchanges from 2 chatgpt conversations (2025-01-01 to 2025-02-01) as model import:chatgpt, tenant me." in result.stdout
    assert "1 conversation(s) had no answered turn" in result.stdout
    again = run("import-conversations", str(FIXTURES / "chatgpt_conversations.json"), "--tenant", "me")
    # A second import adds nothing, and says so (it said "Imported 3 exchanges" again).
    assert again.exit_code == 0 and "Imported 0 new exchanges from 2 chatgpt conversations" in again.stdout
    assert "3 were imported before and stay as they are." in again.stdout
    result = run("import-conversations", str(FIXTURES / "claude_conversations.json"), "--source", "claude")
    assert result.exit_code == 0 and "2 new exchanges from 1 claude" in result.stdout
    assert sorted(r.model for r in store.list_exchanges(limit=50)) == ["import:chatgpt"] * 3 + ["import:claude"] * 2


def test_feedback_export_writes_jsonl_and_warns_about_missing_content(workdir: Path, store: SqlExchangeStore) -> None:
    with_content = ExchangeRecord(
        id="ex_1", created_at=1.0, model="m", outcome="ok",
        request={"messages": [{"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}]},
        response="Lyon",
    )
    without = ExchangeRecord(id="ex_2", created_at=2.0, model="m", outcome="ok")
    store.write_exchanges([with_content, without])
    store.write_feedback([explicit_feedback(with_content, thumbs="down", correction="Paris"), explicit_feedback(without, thumbs="up")])

    out = workdir / "out" / "sft.jsonl"
    result = run("feedback", "export", "--format", "sft", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]}]
    assert "1 sft lines written" in result.stderr and "1 from correction" in result.stderr
    assert "1 exchange(s) with feedback have no stored messages" in result.stderr and "content = true" in result.stderr

    result = run("feedback", "export", "-f", "preference", "-o", "-")
    assert result.exit_code == 0, result.output
    pair = json.loads(result.stdout)
    assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"]) == ("Paris", "Lyon")


def test_imported_conversations_are_stored_masked(workdir: Path, store: SqlExchangeStore) -> None:
    """An export's PII and secrets are masked like the content the gateway traces (issue #13, defect 2)."""
    email, key = "jane.doe@example.com", "ghp_" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4Q5r6S7t8"
    export = [{
        "uuid": "c1", "name": f"Mail {email}", "created_at": "2025-03-10T09:00:00Z",
        "chat_messages": [
            {"uuid": "m1", "text": f"My email is {email} and my token is {key}.", "sender": "human",
             "created_at": "2025-03-10T09:00:05Z"},
            {"uuid": "m2", "text": f"Noted: {email}.", "sender": "assistant", "created_at": "2025-03-10T09:00:09Z"},
        ],
    }]
    path = workdir / "conversations.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    result = run("import-conversations", str(path), "--source", "claude")
    assert result.exit_code == 0, result.output
    (record,) = store.list_exchanges(limit=5)
    stored = repr(store.get_exchange(record.id))
    assert email not in stored and key not in stored
    assert "Noted:" in stored and "My email is" in stored  # the rest of the text is kept
