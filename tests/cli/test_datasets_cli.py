"""``aiestack datasets build|list|show|diff|export`` driven as a user would, over SQLite in a temp dir."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aiestack.cli.app import build_app
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_sql import SqlExchangeStore

pytestmark = pytest.mark.unit

T0 = 1_760_000_000.0


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def exchange(i: int, question: str, answer: str, **changes: Any) -> ExchangeRecord:
    request = {"model": "m", "messages": [{"role": "user", "parts": [{"type": "text", "content": question}]}]}
    return ExchangeRecord(id=f"ex_{i}", created_at=T0 + i, model="m", outcome="ok", route="help",
                          request=request, response=answer, **changes)


@pytest.fixture
def store(workdir: Path) -> Iterator[SqlExchangeStore]:
    store = SqlExchangeStore(f"sqlite:///{workdir / 'data' / 'aiestack.db'}")
    store.migrate()
    yield store
    store.close()


def test_build_list_show_diff_and_export(workdir: Path, store: SqlExchangeStore) -> None:
    assert "no datasets yet" in ok(run("datasets", "list"))
    store.write_exchanges([exchange(1, "2+2?", "4"), exchange(2, "3+3?", "6", guard_action="flag")])
    out = ok(run("datasets", "build", "help-sft", "--route", "help", "-m", "first cut"))
    assert out.startswith("built help-sft@1: 2 chat rows from exchanges (route=help)")
    assert "unchanged: help-sft@1" in ok(run("datasets", "build", "help-sft", "--route", "help"))
    assert "built help-sft@2: 1 chat rows" in ok(run("datasets", "build", "help-sft", "--guard", "none"))
    listing = ok(run("datasets", "list"))
    assert "help-sft" in listing and "guard=none" in listing
    shown = ok(run("datasets", "show", "help-sft@1", "--rows", "1"))
    assert "help-sft@1  chat, 2 rows" in shown and "first cut" in shown and "versions: 1, 2" in shown
    assert json.loads(shown.splitlines()[-1])["lineage"]["exchange_id"] == "ex_1"
    diff = ok(run("datasets", "diff", "help-sft@1"))
    assert "help-sft@1 → help-sft@2: +0 added, -1 removed, 1 unchanged" in diff and '"exchange_id": "ex_2"' in diff
    target = workdir / "train.jsonl"
    assert "wrote 1 lines of help-sft@2" in ok(run("datasets", "export", "help-sft", "--format", "openai", "-o", str(target)))
    assert json.loads(target.read_text()) == {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    hf = ok(run("datasets", "export", "help-sft@1", "--format", "hf", "--lineage", "-o", "-"))
    assert [json.loads(line)["lineage"]["exchange_id"] for line in hf.splitlines()] == ["ex_1", "ex_2"]


def test_build_from_a_file_and_clear_errors(workdir: Path, store: SqlExchangeStore) -> None:
    data = workdir / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n", encoding="utf-8")
    assert "built prefs@1: 1 preference rows from file" in ok(run("datasets", "build", "prefs", "--from", "file", "--path", str(data)))
    assert json.loads(ok(run("datasets", "export", "prefs", "--format", "preference", "-o", "-")))["chosen"] == [
        {"role": "assistant", "content": "4"}
    ]
    bad = run("datasets", "build", "Bad Name")
    assert bad.exit_code == 2 and "invalid dataset name" in bad.output
    assert "needs --path" in run("datasets", "build", "x", "--from", "file").output
    missing = run("datasets", "show", "nope@3")
    assert missing.exit_code != 0 and "there is no dataset 'nope@3'" in str(missing.exception or missing.output)
    empty = run("datasets", "build", "empty", "--route", "nowhere")
    assert empty.exit_code != 0 and "no rows to build" in str(empty.exception or empty.output)
    wrong = run("datasets", "export", "help", "--format", "preference", "-o", "-")
    assert wrong.exit_code != 0
    assert [v["name"] for v in [{"name": n.split()[0]} for n in ok(run("datasets", "list")).splitlines()[1:]]] == ["prefs"]


def test_curate_and_contamination_commands(workdir: Path, store: SqlExchangeStore) -> None:
    suite_question = "How many clips did Natalia sell altogether in April and May if she sold 48 in April and half as many in May?"
    data_dir = workdir / "evals"
    data_dir.mkdir()
    (data_dir / "items.jsonl").write_text(json.dumps({"question": suite_question, "answer": "72"}) + "\n", encoding="utf-8")
    suite = data_dir / "suite.yaml"
    suite.write_text(
        "name: clips\ndataset: {path: items.jsonl, input: question, reference: answer}\n"
        "systems: [{name: m, model: echo}]\nmetrics: [{name: exact_match}]\n", encoding="utf-8",
    )
    rows = [{"question": "What is 2+2?", "answer": "4"}, {"question": "what is 2 + 2", "answer": "4"},
            {"question": suite_question, "answer": "72"}, {"question": "Email?", "answer": "Write to bob@example.com please."},
            {"question": "Joke?", "answer": "As an AI language model, I cannot tell jokes."}]
    source = workdir / "raw.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ok(run("datasets", "build", "raw", "--from", "file", "--path", str(source)))
    report = ok(run("datasets", "contamination", "raw", "--against", str(suite)))
    assert "raw@1: 1 of 5 rows contain eval items" in report and "clips:0" in report
    out = ok(run("datasets", "curate", "raw", "--steps", "exact,quality,pii,contamination", "--against", str(suite), "--into", "clean"))
    assert "curated clean@1 (2 rows) from raw@1 (5 rows)" in out
    assert "exact duplicate" in out and "boilerplate" in out and "contains clips item" in out
    exported = ok(run("datasets", "export", "clean", "--format", "hf", "--lineage", "-o", "-"))
    lines = [json.loads(line) for line in exported.splitlines()]
    assert "bob@example.com" not in exported and "scrubbed_from" in lines[1]["lineage"]
    shown = ok(run("datasets", "show", "clean"))
    assert "derived from raw@1" in shown
    copies = workdir / "copies.jsonl"
    copies.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], rows[2], rows[0]]), encoding="utf-8")
    ok(run("datasets", "build", "copies", "--from", "file", "--path", str(copies)))
    out = ok(run("datasets", "curate", "copies", "--steps", "exact"))  # one id for both copies: not "X of X"
    (line,) = [ln for ln in out.splitlines() if ln.startswith("  exact: ")]
    assert line.endswith("exact duplicate (a later copy of the same row; the first is kept) (1.0)")
    bad = run("datasets", "curate", "raw", "--steps", "exact,shiny")
    assert bad.exit_code == 2 and "unknown step(s) shiny" in bad.output
    assert "needs --against" in run("datasets", "curate", "raw", "--steps", "contamination").output


def test_synthesize_variants_through_the_stack(fake_config: Path, store: SqlExchangeStore) -> None:
    seed = fake_config.parent / "seed.jsonl"
    seed.write_text(json.dumps({"question": "Sort [3, 1, 2] in Python.", "answer": "sorted([3, 1, 2])"}) + "\n", encoding="utf-8")
    ok(run("datasets", "build", "seed", "--from", "file", "--path", str(seed)))
    # The echo model writes back the variant prompt, then answers with it: two rows, one per method.
    out = ok(run("datasets", "synthesize", "evolved", "--seed", "seed", "--model", "echo", "--concurrency", "1"))
    assert "built evolved@1: 2 synthetic rows (variants, by echo)" in out
    shown = ok(run("datasets", "show", "evolved", "--rows", "2"))
    assert "derived from seed@1" in shown and '"method": "evol:deepen"' in shown and '"generator": "echo"' in shown
    # The echo judge's reply (the prompt's first words, max_tokens 4) holds no score: every row goes.
    judged = run("datasets", "synthesize", "judged", "--seed", "seed", "--model", "echo", "--judge", "echo")
    assert judged.exit_code != 0 and "2 judge: no score" in str(judged.exception)
    both = run("datasets", "synthesize", "x", "--model", "echo")
    assert both.exit_code == 2 and "one of them" in both.output
    exchanges = store.list_exchanges(limit=20)
    assert exchanges and all(e.attributes.get("aiestack.side_call.purpose", "").startswith("datasets.") for e in exchanges)


def test_semantic_curation_embeds_with_the_stacks_model(workdir: Path, fake_config: Path) -> None:
    """``curate --steps semantic`` through the CLI: the stack's (batch) embedding model, here an
    OpenAI-compatible server embedding a bag of words, so reordered words are duplicates."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from aiestack.testing.embeddings import bag_of_words_vector

    class Embeddings(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = [{"index": i, "embedding": bag_of_words_vector(t, 256)} for i, t in enumerate(body["input"])]
            out = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        fake_config.write_text(fake_config.read_text(encoding="utf-8") + '[embeddings]\nprovider = "openai"\nmodel = "bow"\n'
                               f'base_url = "http://127.0.0.1:{httpd.server_address[1]}/v1"\n', encoding="utf-8")
        raw = workdir / "raw.jsonl"
        raw.write_text("".join(json.dumps({"question": q, "answer": "Go to settings."}) + "\n"
                               for q in ("reset my password please", "please reset password my", "opening hours")), encoding="utf-8")
        ok(run("datasets", "build", "raw", "--from", "file", "--path", str(raw)))
        out = ok(run("datasets", "curate", "raw", "--steps", "semantic", "--semantic-threshold", "0.95"))  # the progress bar on
        assert "semantic duplicate" in out and "curated raw@2 (2 rows) from raw@1 (3 rows)" in out
    finally:
        httpd.shutdown()
        httpd.server_close()
