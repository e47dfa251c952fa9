"""Loaders: markdown, text, HTML, PDF, JSON/JSONL records (BEIR), source code; failures with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.context.loaders import LoadError, RecordFields, html_to_markdown, kind_of, load_bytes, load_path

pytestmark = pytest.mark.unit
SCIFACT = Path("/work/shared/data/scifact/corpus.jsonl")


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (objects and xref computed)."""
    n = len(pages)
    font_id = 3 + 2 * n
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{3 + 2 * i} 0 R".encode() for i in range(n))
        + f"] /Count {n} >>".encode(),
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_markdown_takes_its_title_from_the_first_heading(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text("Intro line\n\n# User guide\n\nText.\n", encoding="utf-8")
    [doc] = load_path(path)
    assert (doc.kind, doc.title, doc.source) == ("markdown", "User guide", str(path))
    assert doc.text.startswith("Intro line")


def test_plain_text_is_titled_by_its_file_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes", encoding="utf-8")
    [doc] = load_path(path)
    assert (doc.kind, doc.title, doc.text) == ("text", "notes", "just some notes")


def test_html_keeps_headings_as_structure_and_drops_scripts_and_styles() -> None:
    html = """<html><head><title>The page</title><style>.x{color:red}</style></head><body>
      <nav>Home | About</nav>
      <h1>Install</h1><p>Run   <b>pip install</b> aiestack.</p>
      <script>var secret = "do-not-index";</script>
      <h2>From source</h2><ul><li>clone</li><li>build</li></ul></body></html>"""
    [doc] = load_bytes(html.encode(), source="page.html", kind="html", name="page.html")
    assert doc.kind == "markdown" and doc.title == "The page"
    assert "# Install" in doc.text and "## From source" in doc.text
    assert "Run pip install aiestack." in doc.text
    assert "- clone" in doc.text and "- build" in doc.text
    assert "do-not-index" not in doc.text and "color:red" not in doc.text and "Home | About" not in doc.text


def test_html_without_a_title_tag_uses_its_first_heading() -> None:
    body, title = html_to_markdown("<h2>Only heading</h2><p>x</p>")
    assert title == "Only heading" and body.startswith("## Only heading")


def test_pdf_pages_are_kept_with_their_offsets(tmp_path: Path) -> None:
    path = tmp_path / "paper.pdf"
    path.write_bytes(make_pdf(["First page words", "Second page words", "Third page words"]))
    [doc] = load_path(path)
    assert "First page words" in doc.text and "Third page words" in doc.text
    assert len(doc.pages) == 3 and doc.metadata["pages"] == 3
    assert doc.page_at(doc.text.index("Second")) == 2
    assert doc.page_at(doc.text.index("Third")) == 3
    assert doc.page_at(0) == 1


def test_a_corrupt_pdf_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\nnot really a pdf")
    with pytest.raises(LoadError, match=r"broken\.pdf"):
        load_path(path)


def test_beir_jsonl_records_become_documents_with_ids_titles_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "d1", "title": "Aspirin", "text": "Aspirin thins blood.", "metadata": {"year": 2001}},
        {"_id": "d2", "title": "", "text": "No title here."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = load_path(path)
    assert [d.source for d in docs] == [f"{path}#d1", f"{path}#d2"]
    assert docs[0].title == "Aspirin" and docs[0].text == "Aspirin\n\nAspirin thins blood."
    assert docs[0].metadata == {"metadata": {"year": 2001}, "record_id": "d1"}
    assert docs[1].text == "No title here." and docs[1].title == "d2"


def test_records_with_configured_text_and_id_fields(tmp_path: Path) -> None:
    path = tmp_path / "faq.json"
    path.write_text(json.dumps([{"key": "q7", "answer": "Yes.", "lang": "en"}]), encoding="utf-8")
    [doc] = load_path(path, fields=RecordFields(text="answer", id="key", title=None))
    assert (
        doc.source.endswith("#q7")
        and doc.text == "Yes."
        and doc.metadata == {"lang": "en", "record_id": "q7"}
    )


def test_a_record_without_the_text_field_names_the_fields_it_has(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1, "body": "b"}\n', encoding="utf-8")
    with pytest.raises(LoadError) as info:
        load_path(path)
    assert "'text'" in info.value.message and "body" in info.value.message
    assert "--text-field" in (info.value.hint or "")


def test_invalid_json_lines_report_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(LoadError, match="line 2"):
        load_path(path)


def test_duplicate_record_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a", "text": "1"}\n{"id": "a", "text": "2"}\n', encoding="utf-8")
    with pytest.raises(LoadError, match="appears twice"):
        load_path(path)


@pytest.mark.skipif(not SCIFACT.exists(), reason="the shared SciFact data set is not on this machine")
def test_the_scifact_corpus_loads() -> None:
    docs = load_path(SCIFACT)
    assert len(docs) == 5183
    assert all(d.metadata["record_id"] and d.text for d in docs)
    assert len({d.source for d in docs}) == len(docs)


def test_source_code_is_code_with_its_language(tmp_path: Path) -> None:
    for name, language in (
        ("app.py", "python"),
        ("main.go", "go"),
        ("lib.rs", "rust"),
        ("x.ts", "typescript"),
    ):
        (tmp_path / name).write_text("code\n", encoding="utf-8")
        [doc] = load_path(tmp_path / name)
        assert (doc.kind, doc.metadata["language"], doc.title) == ("code", language, name)


def test_binary_and_non_utf8_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "b.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(LoadError, match="binary"):
        load_path(tmp_path / "a.txt")
    with pytest.raises(LoadError, match="not UTF-8") as info:
        load_path(tmp_path / "b.txt")
    assert "iconv" in (info.value.hint or "")


def test_unknown_extensions_have_no_loader(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert kind_of("image.png") is None
    with pytest.raises(LoadError, match="no loader"):
        load_path(tmp_path / "image.png")
