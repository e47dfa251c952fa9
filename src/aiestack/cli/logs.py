"""``aiestack logs``: recent exchanges with tokens, latency figures and cost."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

import typer
from rich.table import Table

from aiestack.cli.console import table_console


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def register(app: typer.Typer) -> None:
    @app.command()
    def logs(
        limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many exchanges."),
        model: str = typer.Option(None, "--model", "-m", help="Only this model."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    ) -> None:
        """Recent exchanges: model, tokens, TTFT, TPOT, latency, cost."""
        from aiestack.settings import load_settings
        from aiestack.stores.open import open_store

        settings = load_settings()
        store = open_store(settings.store_url, "exchanges")
        try:
            store.migrate()
            records = store.list_exchanges(limit=limit, model=model)
        finally:
            store.close()
        if as_json:
            for r in records:
                typer.echo(json.dumps(asdict(r), default=str))
            return
        table = Table(title=f"Last {len(records)} exchanges (times in ms)", pad_edge=False, box=None, header_style="bold")
        for col, just in (
            ("time", "left"),
            ("exchange", "left"),
            ("model", "left"),
            ("outcome", "left"),
            ("in", "right"),
            ("out", "right"),
            ("TTFT", "right"),
            ("TPOT", "right"),
            ("total", "right"),
            ("cost $", "right"),
        ):
            table.add_column(col, justify=just, no_wrap=True, min_width=12 if col == "model" else None)  # type: ignore[arg-type]
        today = dt.date.today()
        for r in records:
            stamp = dt.datetime.fromtimestamp(r.created_at)
            when = stamp.strftime("%H:%M:%S" if stamp.date() == today else "%m-%d %H:%M")
            outcome = r.outcome if r.outcome == "ok" else f"[red]{r.outcome}[/] {r.error_type or ''}"
            cost = "?" if r.cost_usd is None else ("0" if r.cost_usd == 0 else f"{r.cost_usd:.6f}")
            tpot = "-" if r.tpot_ms is None else f"{r.tpot_ms:.1f}"
            table.add_row(
                when,
                r.id[-8:],
                r.model,
                outcome,
                str(r.input_tokens),
                str(r.output_tokens),
                _ms(r.ttft_ms),
                tpot,
                _ms(r.total_ms),
                cost,
            )
        table_console().print(table)
