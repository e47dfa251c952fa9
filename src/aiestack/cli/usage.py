"""``aiestack usage``: requests, tokens, cost and errors by key, tenant, model and UTC day."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

import typer
from rich.table import Table

from aiestack.cli.keys import open_key_service, table_console
from aiestack.stores.base import USAGE_GROUPS, KeyRecord, UsageGroup, UsageRow, check_usage_groups


def parse_time(value: str | None, *, option: str, end_of_day: bool = False) -> float | None:
    """A date (``2026-11-01``) or date-time (``2026-11-01T12:00``) as epoch seconds; UTC unless it
    says otherwise. With ``end_of_day``, a plain date means the end of that day (so that
    ``--until 2026-11-30`` includes the 30th)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return (moment + dt.timedelta(days=1 if end_of_day else 0)).timestamp()
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)", param_hint=option
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _groups(value: str) -> list[str]:
    return [g.strip() for g in value.split(",") if g.strip()]


def _cost(usd: float) -> str:
    return "0" if usd == 0 else f"{usd:.6f}" if usd < 1 else f"{usd:,.2f}"


def register(app: typer.Typer) -> None:
    @app.command()
    def usage(
        by: str = typer.Option(
            "key", "--by", help=f"Group by a comma-separated subset of {', '.join(USAGE_GROUPS)}."
        ),
        since: str = typer.Option(None, "--since", help="From this UTC date or time (YYYY-MM-DD[THH:MM])."),
        until: str = typer.Option(
            None, "--until", help="Up to this UTC date (inclusive) or time (exclusive)."
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    ) -> None:
        """Usage and cost summarised from the exchange log."""
        groups = _groups(by)
        start = parse_time(since, option="--since")
        end = parse_time(until, option="--until", end_of_day=True)
        with open_key_service() as service:
            rows = service.usage(by=groups, since=start, until=end)
            names = {k.id: k for k in service.list(include_revoked=True)} if "key" in groups else {}
        if as_json:
            for row in rows:
                typer.echo(json.dumps({k: v for k, v in asdict(row).items() if v is not None}))
            return
        if not rows:
            typer.echo("No exchanges in this period.")
            return
        table = Table(box=None, pad_edge=False, header_style="bold", show_footer=len(rows) > 1)
        totals = _total(rows)
        labels = check_usage_groups(groups)  # valid: the service has checked them
        for i, group in enumerate(labels):
            table.add_column(group, footer="total" if i == 0 else "", no_wrap=True)
        for column, value in (
            ("requests", f"{totals.requests:,}"),
            ("input tokens", f"{totals.input_tokens:,}"),
            ("output tokens", f"{totals.output_tokens:,}"),
            ("cost USD", _cost(totals.cost_usd)),
            ("errors", f"{totals.errors:,}"),
        ):
            table.add_column(column, footer=value, justify="right", no_wrap=True)
        for row in rows:
            cells = [_label(row, g, names) for g in labels]
            table.add_row(
                *cells,
                f"{row.requests:,}",
                f"{row.input_tokens:,}",
                f"{row.output_tokens:,}",
                _cost(row.cost_usd),
                f"[red]{row.errors:,}[/]" if row.errors else "0",
            )
        table_console().print(table)


def _label(row: UsageRow, group: UsageGroup, keys: dict[str, KeyRecord]) -> str:
    from aiestack.gateway.keys import display_key

    value = row.group_value(group)
    if group != "key":
        return value or "-"
    if value is None:
        return "(no key)"
    key = keys.get(value)
    if key is None:
        return value
    return f"{value} {display_key(key)}" + (f" {key.name}" if key.name else "")


def _total(rows: list[UsageRow]) -> UsageRow:
    return UsageRow(
        requests=sum(r.requests for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        errors=sum(r.errors for r in rows),
    )
