"""``aiestack prompts push|list|show|diff|label`` driven as a user would, over SQLite in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aiestack.cli.app import build_app, main
from aiestack.cli.prompts import colored_diff
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR

pytestmark = pytest.mark.unit


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(build_app(), list(args), input=input)


@pytest.fixture
def store(workdir: Path) -> Iterator[SqlExchangeStore]:
    store = SqlExchangeStore(f"sqlite:///{workdir / 'data' / 'aiestack.db'}")
    store.migrate()
    yield store
    store.close()


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_push_list_show_label_and_diff(workdir: Path, store: SqlExchangeStore) -> None:
    v1 = workdir / "v1.j2"
    v1.write_text("You help with {{ product }}.\nBe brief.\n", encoding="utf-8")
    v2 = workdir / "v2.j2"
    v2.write_text("You help with {{ product }}.\nBe thorough, {{ customer }}.\n", encoding="utf-8")

    assert ok(run("prompts", "push", "support", str(v1), "--label", "production", "-m", "first")).strip() == (
        "support@1 pushed [production]; variables: product"
    )
    assert ok(run("prompts", "push", "support", str(v1))).strip() == "unchanged, still support@1; variables: product"
    assert "support@2 pushed [staging]; variables: customer, product" in ok(
        run("prompts", "push", "support", "-", "--label", "staging", input=v2.read_text())
    )
    store.write_exchanges(
        [
            ExchangeRecord(id=f"ex_{i}", created_at=float(i), model="m", outcome="ok", attributes={PROMPT_NAME_ATTR: "support", PROMPT_VERSION_ATTR: v})
            for i, v in enumerate([1, 1, 1, 2])
        ]
    )

    listing = ok(run("prompts", "list"))
    assert "support" in listing and "production→1, staging→2" in listing and " 4 " in f" {listing} "

    show = ok(run("prompts", "show", "support"))
    rows = [line.split() for line in show.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("2", "staging", "1"), ("1", "production", "3")]

    assert ok(run("prompts", "show", "support@production")) == v1.read_text()
    assert ok(run("prompts", "show", "support@2")) == v2.read_text()
    rendered = run("prompts", "show", "support@staging", "--render", "product=Acme", "-r", "customer=Ada")
    assert ok(rendered) == "You help with Acme.\nBe thorough, Ada.\n"

    diff = ok(run("prompts", "diff", "support", "production", "staging"))
    assert diff.splitlines() == [
        "--- support@1",
        "+++ support@2",
        "@@ -1,2 +1,2 @@",
        " You help with {{ product }}.",
        "-Be brief.",
        "+Be thorough, {{ customer }}.",
    ]

    assert ok(run("prompts", "label", "support", "2", "production")).strip() == "support@production → 2 (was 1)"
    assert store.resolve_label("support", "production").version == 2  # type: ignore[union-attr]


def fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run through ``main`` (which turns an AiestackError into its message and exit code 2)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_errors_say_what_to_do(workdir: Path, store: SqlExchangeStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert "aiestack prompts push ghost" in fails(["prompts", "show", "ghost@production"], capsys)
    (workdir / "t.j2").write_text("x", encoding="utf-8")
    ok(run("prompts", "push", "support", str(workdir / "t.j2")))
    assert "no version 9" in fails(["prompts", "label", "support", "9", "production"], capsys)
    assert "not a valid prompt name" in fails(["prompts", "push", "Bad Name", str(workdir / "t.j2")], capsys)
    (workdir / "v.j2").write_text("Hi {{ name }}", encoding="utf-8")
    ok(run("prompts", "push", "greet", str(workdir / "v.j2")))
    assert "needs the variable(s) name" in fails(["prompts", "show", "greet@latest", "--render", "other=1"], capsys)
    result = run("prompts", "push", "support", str(workdir / "missing.j2"))
    assert result.exit_code == 2 and "cannot read" in result.output
    assert "support" in ok(run("prompts", "list"))


def test_diffs_are_colored_by_kind_of_line() -> None:
    text = colored_diff("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same\n")
    styles = {text.plain[span.start : span.end].strip(): str(span.style) for span in text.spans}
    assert styles == {"--- a": "bold", "+++ b": "bold", "@@ -1 +1 @@": "cyan", "-old": "red", "+new": "green"}


def test_render_gives_today_as_a_request_would(workdir: Path, store: SqlExchangeStore) -> None:
    # docs/prompts.md's template reads {{ today }}, which every request gets; rendering it must not ask for it.
    import datetime as dt

    template = workdir / "support.j2"
    template.write_text("You help with {{ product }}.\nToday is {{ today }}.\n", encoding="utf-8")
    ok(run("prompts", "push", "support", str(template), "--label", "staging"))
    rendered = ok(run("prompts", "show", "support@staging", "--render", "product=Acme"))
    assert rendered == f"You help with Acme.\nToday is {dt.datetime.now(tz=dt.UTC):%Y-%m-%d}.\n"
    assert ok(run("prompts", "show", "support@staging", "-r", "product=Acme", "-r", "today=Monday")).endswith("Monday.\n")
