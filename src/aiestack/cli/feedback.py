"""``aiestack feedback export`` (finetuning datasets) and ``aiestack import-conversations FILE``."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aiestack.cli.usage import parse_time

if TYPE_CHECKING:
    from aiestack.feedback.imports import Source


class ExportFormat(StrEnum):
    sft = "sft"
    preference = "preference"


class ImportSource(StrEnum):
    auto = "auto"
    chatgpt = "chatgpt"
    claude = "claude"


_SOURCES: dict[ImportSource, Source | None] = {
    ImportSource.auto: None,
    ImportSource.chatgpt: "chatgpt",
    ImportSource.claude: "claude",
}


@contextmanager
def configured_store() -> Iterator[Any]:
    """The configured exchange store (migrated), closed afterwards."""
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def _day(epoch_s: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d") if epoch_s is not None else "-"


def register(app: typer.Typer) -> None:
    feedback = typer.Typer(help="User feedback: finetuning datasets from it (see docs/feedback.md).", no_args_is_help=True)
    app.add_typer(feedback, name="feedback")

    @feedback.command("export")
    def export(
        format: ExportFormat = typer.Option(..., "--format", "-f", help="sft: chat examples; preference: chosen/rejected pairs."),
        out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write ('-' for stdout)."),
        min_value: float = typer.Option(
            0.75, "--min-value", min=0, max=1, help="SFT: least mean judgement (0-1) of an uncorrected answer."
        ),
        tenant: str = typer.Option(None, "--tenant", help="Only this tenant's feedback."),
        since: str = typer.Option(None, "--since", help="Only feedback from this UTC date or time on."),
        metadata: bool = typer.Option(False, "--metadata", help="Add a metadata object (exchange id, route, prompt version) to each line."),
    ) -> None:
        """Write a JSONL dataset for finetuning from the stored feedback."""
        from aiestack.errors import ConfigError
        from aiestack.feedback.export import export_feedback
        from aiestack.stores.feedback import FeedbackStore

        start = parse_time(since, option="--since")
        with configured_store() as opened:
            store: Any = opened
            if not isinstance(opened, FeedbackStore):
                raise ConfigError("store.url", f"the store {type(store).__name__} holds no feedback", "use SQLite or PostgreSQL")
            if str(out) == "-":
                stats = export_feedback(store, store, sys.stdout, format=format.value, min_value=min_value, tenant=tenant, since=start, metadata=metadata)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("w", encoding="utf-8") as handle:
                    stats = export_feedback(store, store, handle, format=format.value, min_value=min_value, tenant=tenant, since=start, metadata=metadata)
        sources = ", ".join(f"{n} from {s}" for s, n in sorted(stats.by_source.items())) or "none"
        typer.echo(f"{stats.written} {format.value} lines written to {out} ({sources}); {stats.exchanges} exchanges had feedback.", err=True)
        if stats.missing_content:
            typer.echo(
                f"warning: {stats.missing_content} exchange(s) with feedback have no stored messages and were left out. "
                "Content is stored only with content tracing on: set [tracing] content = true (AIESTACK_TRACING__CONTENT=true).",
                err=True,
            )
        if stats.missing_exchange:
            typer.echo(f"warning: {stats.missing_exchange} feedback record(s) name exchanges that are not stored.", err=True)

    @app.command("import-conversations")
    def import_(
        file: Path = typer.Argument(..., exists=True, dir_okay=False, help="conversations.json (or the export .zip)."),
        tenant: str = typer.Option("default", "--tenant", help="The tenant the exchanges belong to."),
        source: ImportSource = typer.Option(ImportSource.auto, "--source", help="The export's kind (auto: detect)."),
    ) -> None:
        """Store a ChatGPT or Claude export's conversations as exchanges (re-importing is idempotent).

        PII and secrets in the turns are masked before they are stored, as the gateway masks the
        content it traces.
        """
        import asyncio

        from aiestack.build import build_stack
        from aiestack.feedback.imports import import_conversations
        from aiestack.settings import load_settings

        stack = build_stack(load_settings())  # for its trace redactor: the same masking as served exchanges
        try:
            with configured_store() as store:
                stats = import_conversations(
                    store, file, tenant=tenant, source=_SOURCES[source], redact=stack.tracing.redact
                )
        finally:
            asyncio.run(stack.aclose())
        earlier = stats.exchanges - stats.new
        typer.echo(
            f"Imported {stats.new} new exchanges from {stats.conversations} {stats.source} conversations "
            f"({_day(stats.first)} to {_day(stats.last)}) as model import:{stats.source}, tenant {tenant}"
            + (f"; {earlier} were imported before and stay as they are." if earlier else ".")
        )
        if stats.skipped_conversations:
            typer.echo(f"{stats.skipped_conversations} conversation(s) had no answered turn and were skipped.")
