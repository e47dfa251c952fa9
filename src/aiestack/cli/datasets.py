"""``aiestack datasets build|list|show|diff|export``: versioned datasets from the terminal."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from aiestack.cli.keys import table_console
from aiestack.cli.usage import parse_time
from aiestack.errors import ConfigError, NotFound
from aiestack.stores.datasets import DatasetStore, DatasetVersion


class Source(StrEnum):
    exchanges = "exchanges"
    file = "file"
    suite = "suite"
    conversations = "conversations"


class Kind(StrEnum):
    chat = "chat"
    preference = "preference"


class Guard(StrEnum):
    any = "any"
    none = "none"
    flag = "flag"
    redact = "redact"


class Format(StrEnum):
    openai = "openai"
    hf = "hf"
    preference = "preference"


@contextmanager
def open_datasets() -> Iterator[Any]:
    """The configured store (migrated), which holds exchanges and datasets; closed afterwards."""
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    try:
        store.migrate()
        if not isinstance(store, DatasetStore):
            raise ConfigError("store.url", f"the store {type(store).__name__} cannot hold datasets", "use SQLite or PostgreSQL")
        yield store
    finally:
        store.close()


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _resolve(store: DatasetStore, ref: str) -> DatasetVersion:
    from aiestack.datasets import resolve

    try:
        return resolve(store, ref)
    except KeyError as exc:
        raise NotFound(str(exc.args[0]), hint="`aiestack datasets list` shows the datasets and their newest versions") from None


def _where(version: DatasetVersion) -> str:
    source = dict(version.source)
    origin = str(source.pop("from", "?"))
    source.pop("skipped", None)
    details = source.pop("filters", None) or source
    return origin + (f" ({', '.join(f'{k}={v}' for k, v in details.items())})" if details else "")


def register(app: typer.Typer) -> None:
    datasets = typer.Typer(help="Versioned datasets for finetuning and evals (see docs/datasets.md).", no_args_is_help=True)
    app.add_typer(datasets, name="datasets")

    @datasets.command("build")
    def build(
        name: str = typer.Argument(..., help="The dataset's name (lower-case letters, digits, '_', '.', '-')."),
        source: Source = typer.Option(Source.exchanges, "--from", help="Where the rows come from."),
        path: Path = typer.Option(None, "--path", "-p", help="The file (--from file), suite YAML (suite) or export (conversations)."),
        kind: Kind = typer.Option(None, "--kind", help="chat or preference (default: chat; a file: what its rows look like)."),
        route: str = typer.Option(None, "--route", help="Exchanges: only this route."),
        model: str = typer.Option(None, "--model", help="Exchanges: only this model."),
        tenant: str = typer.Option(None, "--tenant", help="Exchanges: only this tenant."),
        since: str = typer.Option(None, "--since", help="Exchanges: from this UTC date or time on."),
        until: str = typer.Option(None, "--until", help="Exchanges: up to this UTC date (inclusive) or time."),
        min_feedback: float = typer.Option(None, "--min-feedback", min=0, max=1, help="Exchanges: only those judged at least this well (0-1)."),
        guard: Guard = typer.Option(Guard.any, "--guard", help="Exchanges: none = no guardrail acted; flag/redact = only those."),
        prompt: str = typer.Option(None, "--prompt", help="Exchanges: only those that used this registry prompt."),
        prompt_version: int = typer.Option(None, "--prompt-version", min=1, help="Exchanges: only this version of --prompt."),
        limit: int = typer.Option(None, "--limit", min=1, help="At most this many rows."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="File: leave invalid rows out (counted) instead of failing."),
        message: str = typer.Option(None, "--message", "-m", help="What this version is for."),
    ) -> None:
        """Build a new version of a dataset (nothing new is stored if the rows are unchanged)."""
        from aiestack.datasets import (
            ExchangeSelection,
            build_dataset,
            from_conversations,
            from_exchanges,
            from_file,
            from_suite,
        )
        from aiestack.stores.datasets import check_dataset_name

        try:
            check_dataset_name(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from None
        if source != Source.exchanges and path is None:
            raise typer.BadParameter(f"--from {source.value} needs --path", param_hint="--path")
        if prompt_version is not None and prompt is None:
            raise typer.BadParameter("--prompt-version needs --prompt (the prompt's name)", param_hint="--prompt-version")
        with open_datasets() as store:
            if source == Source.exchanges:
                selection = ExchangeSelection(
                    route=route, model=model, tenant=tenant, since=parse_time(since, option="--since"),
                    until=parse_time(until, option="--until", end_of_day=True), min_feedback=min_feedback,
                    guard=guard.value, prompt=prompt, prompt_version=prompt_version, limit=limit,
                )
                built = from_exchanges(store, selection, kind.value if kind else "chat")
            elif source == Source.file:
                built = from_file(path, kind.value if kind else None, skip_invalid=skip_invalid)
            elif source == Source.suite:
                built = from_suite(path, limit=limit)
            else:
                built = from_conversations(path)
            if kind is not None and built.kind != kind.value:
                raise typer.BadParameter(f"--from {source.value} gives {built.kind} rows, not {kind.value}", param_hint="--kind")
            if not built.rows:
                left = ", ".join(f"{n} {why}" for why, n in built.skipped.items()) or "nothing matched"
                hint = " (turn on tracing.content to store messages)" if "no stored content" in built.skipped else ""
                raise NotFound(f"no rows to build {name!r} from: {left}{hint}", hint="widen the filters or check the source")
            version, created = build_dataset(store, name, built, message=message)
        out = typer.echo
        out(f"{'built' if created else 'unchanged:'} {version.ref}: {version.rows} {version.kind} rows from {_where(version)}")
        for why, count in sorted(built.skipped.items()):
            out(f"  left out {count}: {why}")

    @datasets.command("list")
    def list_() -> None:
        """Every dataset with its newest version."""
        with open_datasets() as store:
            found = store.list_datasets()
        if not found:
            typer.echo("no datasets yet: build one with `aiestack datasets build NAME`")
            return
        table = Table("dataset", "version", "kind", "rows", "built", "from", box=None)
        for v in found:
            table.add_row(v.name, str(v.version), v.kind, str(v.rows), _when(v.created_at), _where(v))
        table_console().print(table)

    @datasets.command("show")
    def show(
        ref: str = typer.Argument(..., help="NAME (the newest version) or NAME@VERSION."),
        rows: int = typer.Option(3, "--rows", "-n", min=0, help="How many rows to print (with lineage)."),
    ) -> None:
        """A version's details and its first rows."""
        from aiestack.datasets import iter_rows

        with open_datasets() as store:
            version = _resolve(store, ref)
            versions = store.dataset_versions(version.name)
            sample = [r for _, r in zip(range(rows), iter_rows(store, version), strict=False)]
        out = typer.echo
        out(f"{version.ref}  {version.kind}, {version.rows} rows, built {_when(version.created_at)}")
        out(f"  content hash {version.content_hash}")
        out(f"  from {_where(version)}" + (f", derived from {version.parent}" if version.parent else ""))
        for why, count in dict(version.source).get("skipped", {}).items():
            out(f"  left out {count}: {why}")
        if version.message:
            out(f"  {version.message}")
        out(f"  versions: {', '.join(str(v.version) for v in versions)}")
        for row in sample:
            out(json.dumps({"id": row.id[:12], "lineage": dict(row.lineage), **dict(row.data)}, ensure_ascii=False))

    @datasets.command("diff")
    def diff(
        old: str = typer.Argument(..., help="NAME@VERSION (the older)."),
        new: str = typer.Argument(None, help="NAME@VERSION (default: the newest version of OLD's dataset)."),
        rows: int = typer.Option(5, "--rows", "-n", min=0, help="How many added and removed rows to print."),
    ) -> None:
        """Rows added and removed between two versions (rows compare by content)."""
        from aiestack.datasets import diff_versions

        with open_datasets() as store:
            a = _resolve(store, old)
            b = _resolve(store, new or a.name)
            result = diff_versions(store, a, b)
        out = typer.echo
        out(f"{a.ref} → {b.ref}: +{len(result.added)} added, -{len(result.removed)} removed, {result.unchanged} unchanged")
        for sign, found in (("+", result.added), ("-", result.removed)):
            for row in found[:rows]:
                out(f"{sign} {row.id[:12]} {json.dumps(dict(row.lineage), ensure_ascii=False)}")

    @datasets.command("export")
    def export(
        ref: str = typer.Argument(..., help="NAME (the newest version) or NAME@VERSION."),
        format: Format = typer.Option(Format.openai, "--format", "-f", help="openai (fine-tuning API), hf (TRL / datasets), preference."),
        out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write ('-' for stdout)."),
        lineage: bool = typer.Option(False, "--lineage", help="hf: add each row's id and lineage."),
    ) -> None:
        """Write a version as JSONL for a trainer."""
        from aiestack.datasets import export_dataset

        with open_datasets() as store:
            version = _resolve(store, ref)
            if format == Format.preference and version.kind != "preference":
                raise typer.BadParameter(f"{version.ref} holds chat rows, which have no pairs; use openai or hf", param_hint="--format")
            if str(out) == "-":
                written = export_dataset(store, version, sys.stdout, format.value, lineage=lineage)
            else:
                with out.open("w", encoding="utf-8") as handle:
                    written = export_dataset(store, version, handle, format.value, lineage=lineage)
        if str(out) != "-":
            typer.echo(f"wrote {written} lines of {version.ref} to {out} ({format.value})")
