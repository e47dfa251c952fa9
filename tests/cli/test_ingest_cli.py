"""``aiestack ingest`` driven as a user would, with embeddings from a local OpenAI-compatible test server."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from aiestack.cli import build_app, main

pytestmark = pytest.mark.unit


class _Embeddings(BaseHTTPRequestHandler):
    """POST /v1/embeddings: 4-dimensional vectors from a hash of each input."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = [
            {"index": i, "embedding": [b / 255 for b in hashlib.sha256(text.encode()).digest()[:4]]}
            for i, text in enumerate(body["input"])
        ]
        out = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def config(workdir: Path) -> Iterator[Path]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cfg = workdir / "aiestack.toml"
    cfg.write_text(
        'default_model = "echo"\nembedded_model = false\n[models.echo]\nprovider = "fake"\n'
        f'[embeddings]\nprovider = "openai"\nmodel = "hash-emb"\ncache = false\n'
        f'base_url = "http://127.0.0.1:{httpd.server_address[1]}/v1"\n',
        encoding="utf-8",
    )
    docs = workdir / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Guide\n\n## Install\n\nRun pip install.\n", encoding="utf-8")
    (docs / "notes.txt").write_text("Some notes.", encoding="utf-8")
    yield cfg
    httpd.shutdown()
    httpd.server_close()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _row(out: str) -> list[str]:
    """The numbers row of the summary table: added, updated, unchanged, pruned, failed, chunks, seconds."""
    lines = [line for line in out.splitlines() if line.strip() and line.strip()[0].isdigit()]
    return [cell for cell in lines[-1].split() if cell != "│"]


def test_ingest_a_directory_and_see_the_summary(config: Path) -> None:
    code, out, err = run("ingest", "docs", "--collection", "kb", "--quiet")
    assert code == 0, err
    assert "ingested into 'kb'" in out and "added" in out and "chunks" in out
    added, updated, unchanged, pruned, failed, chunks, _ = _row(out)
    assert (added, updated, unchanged, pruned, failed, chunks) == ("2", "0", "0", "0", "0", "2")


def test_a_second_run_skips_unchanged_files_and_prune_removes_deleted_ones(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("ingest", "docs", "-c", "kb", "--quiet")[0] == 0
    code, out, err = run("ingest", "docs", "-c", "kb", "--quiet")
    assert code == 0, err
    assert _row(out)[:3] == ["0", "0", "2"]  # the store in the data directory kept the first run
    (config.parent / "docs" / "notes.txt").unlink()
    (config.parent / "docs" / "guide.md").write_text("# Guide\n\nChanged.\n", encoding="utf-8")
    code, out, err = run("ingest", "docs", "-c", "kb", "--prune", "--quiet")
    assert code == 0, err
    assert _row(out)[:4] == ["0", "1", "0", "1"]  # guide updated, notes pruned
    with pytest.raises(SystemExit) as info:
        main(["ingest", "docs", "-c", "kb", "--tenant", "acme", "--quiet"])
    assert info.value.code == 2 and "belongs to another tenant" in capsys.readouterr().err


def test_a_broken_file_is_reported_with_its_reason_and_exit_status_1(config: Path) -> None:
    (config.parent / "docs" / "bad.jsonl").write_text("{oops\n", encoding="utf-8")
    code, out, err = run("ingest", "docs", "-c", "kb", "--quiet")
    assert code == 1
    assert _row(out)[0] == "2" and _row(out)[4] == "1"
    assert "bad.jsonl" in err and "invalid JSON on line 1" in err


def test_records_with_custom_fields_and_chunker_options(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config.parent / "faq.jsonl").write_text(
        json.dumps({"key": "a", "answer": "word " * 50}) + "\n", encoding="utf-8"
    )
    args = ["faq.jsonl", "-c", "faq", "--text-field", "answer", "--id-field", "key", "--quiet"]
    code, out, err = run("ingest", *args, "--chunker", "tokens", "--chunk-size", "20", "--overlap", "5")
    assert code == 0, err
    assert _row(out)[0] == "1" and _row(out)[5] == "3"  # 50 tokens: windows 0-19, 15-34, 30-49
    with pytest.raises(SystemExit) as info:
        main(["ingest", *args, "--chunker", "tokens", "--chunk-size", "5", "--overlap", "5"])
    assert info.value.code == 2
    assert "--overlap 5 must be smaller than --chunk-size 5" in capsys.readouterr().err


def test_nothing_matched_is_a_clear_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ingest", "nowhere/*.md", "-c", "kb", "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Nothing matched 'nowhere/*.md'" in err and "quote globs" in err


def test_a_loopback_url_is_refused_unless_allowed(config: Path) -> None:
    base = config.read_text().split('base_url = "')[1].split("/v1")[0]
    code, _, err = run("ingest", f"{base}/v1/embeddings", "-c", "web", "--quiet")
    assert code == 1 and "loopback" in err and "Refusing" in err
    code, _, err = run("ingest", f"{base}/v1/embeddings", "-c", "web", "--quiet", "--allow-private")
    assert "loopback" not in err  # reached (the server answers GET with an error status: reported as such)
    assert "HTTP 501" in err


def test_an_unknown_contextual_model_is_a_clear_error(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ingest", "docs", "-c", "kb", "--contextual", "nope", "--quiet"])
    assert info.value.code == 2 and "nope" in capsys.readouterr().err


def test_contextual_ingest_keeps_its_contexts_in_the_store(config: Path) -> None:
    code, out, err = run("ingest", "docs/guide.md", "-c", "kb", "--contextual", "echo", "--quiet")
    assert code == 0, err
    assert _row(out)[0] == "1" and _row(out)[5] == "1"
    from aiestack.settings import load_settings
    from aiestack.stores.context_cache_sql import SqlContextCache

    engine = sa.create_engine(load_settings().store_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT model, key, context FROM context_cache")).all()
    engine.dispose()
    assert [r.model for r in rows] == ["echo"] and "Run pip install." in rows[
        0
    ].context  # the echo of the prompt
    cache = SqlContextCache(load_settings().store_url)
    assert cache.get_contexts("echo", [rows[0].key]) == {rows[0].key: rows[0].context}
    cache.close()
