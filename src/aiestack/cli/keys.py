"""``aiestack keys create|list|revoke``: virtual keys for tenants, with their limits and budgets.

``create`` prints the secret alone on stdout (so ``KEY=$(aiestack keys create --tenant t)`` works)
and everything else on stderr; the secret is shown this once and never again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from aiestack.cli.console import table_console

if TYPE_CHECKING:
    from aiestack.gateway.keys import KeyService
    from aiestack.stores.base import KeyRecord


class BudgetPeriod(StrEnum):
    day = "day"
    month = "month"


@contextmanager
def open_key_service() -> Iterator[KeyService]:
    """The key service over the configured store (migrated), closed afterwards."""
    from aiestack.errors import ConfigError
    from aiestack.gateway.keys import KeyService
    from aiestack.settings import load_settings
    from aiestack.stores.base import KeyStore, UsageStore
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    try:
        if not (isinstance(store, KeyStore) and isinstance(store, UsageStore)):
            raise ConfigError("store.url", f"the store {type(store).__name__} cannot hold API keys", "use a SQLite, PostgreSQL or memory store")
        store.migrate()
        yield KeyService(store, store)
    finally:
        store.close()


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _limits(key: KeyRecord) -> str:
    parts = [f"{key.rpm} rpm" if key.rpm is not None else "", f"{key.tpm} tpm" if key.tpm is not None else ""]
    return ", ".join(p for p in parts if p) or "none"


def _budgets(key: KeyRecord) -> str:
    parts = [
        f"${key.budget_day_usd:g}/day" if key.budget_day_usd is not None else "",
        f"${key.budget_month_usd:g}/month" if key.budget_month_usd is not None else "",
    ]
    return ", ".join(p for p in parts if p) or "none"


def _as_json(key: KeyRecord) -> dict[str, object]:
    """A key for scripts: every field but the secret's hash, which is of no use outside the store."""
    data = asdict(key)
    del data["secret_hash"]
    data["models"] = list(key.models)
    return data


def register(app: typer.Typer) -> None:
    keys = typer.Typer(
        name="keys",
        help="Virtual API keys: one per tenant or client, each with its own limits and budget.",
        no_args_is_help=True,
    )

    @keys.command("create")
    def create(
        tenant: str = typer.Option(
            ..., "--tenant", "-t", help="Who the key belongs to (team, customer, app)."
        ),
        name: str = typer.Option(None, "--name", help="A label to tell keys apart."),
        rpm: int = typer.Option(None, "--rpm", min=1, help="Requests per minute (default: no limit)."),
        tpm: int = typer.Option(
            None, "--tpm", min=1, help="Tokens per minute, input + output (default: no limit)."
        ),
        budget_usd: float = typer.Option(None, "--budget-usd", min=0, help="Spend limit in USD per period."),
        budget_period: BudgetPeriod = typer.Option(
            BudgetPeriod.month, "--budget-period", help="The period --budget-usd applies to (UTC)."
        ),
        models: str = typer.Option(
            "", "--models", help="Comma-separated models/routes the key may use (default: all)."
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the key and its secret as one JSON object."
        ),
    ) -> None:
        """Create a key. Its secret is printed once: store it now."""
        day = budget_usd if budget_period is BudgetPeriod.day else None
        month = budget_usd if budget_period is BudgetPeriod.month else None
        with open_key_service() as service:
            record, secret = service.create(
                tenant=tenant,
                name=name,
                rpm=rpm,
                tpm=tpm,
                budget_day_usd=day,
                budget_month_usd=month,
                models=models.split(","),
            )
        if as_json:
            typer.echo(json.dumps({**_as_json(record), "secret": secret}))
        else:
            typer.echo(secret)
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(
            f"Created key [bold]{record.id}[/] for tenant [bold]{record.tenant}[/] "
            f"(limits: {_limits(record)}; budgets: {_budgets(record)}; "
            f"models: {', '.join(record.models) or 'all'})."
        )
        err.print(
            "[yellow]Store this secret now: it is shown only once and cannot be recovered.[/] "
            "Clients send it as 'Authorization: Bearer <secret>' (an OpenAI client's api_key)."
        )

    @keys.command("list")
    def list_keys(
        tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's keys."),
        include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    ) -> None:
        """List keys (never their secrets) with their limits and budgets."""
        from aiestack.gateway.keys import display_key

        with open_key_service() as service:
            records = service.list(tenant=tenant, include_revoked=include_revoked)
        if as_json:
            for record in records:
                typer.echo(json.dumps(_as_json(record)))
            return
        if not records:
            typer.echo("No keys yet. Create one with: aiestack keys create --tenant NAME")
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("id", "name", "prefix", "tenant", "limits", "budgets", "models", "created", "revoked"):
            table.add_column(column, no_wrap=column in ("id", "prefix", "created", "revoked"))
        for r in records:
            table.add_row(
                r.id,
                r.name or "-",
                display_key(r),
                r.tenant,
                _limits(r),
                _budgets(r),
                ", ".join(r.models) or "all",
                _when(r.created_at),
                f"[red]{_when(r.revoked_at)}[/]" if r.revoked else "-",
            )
        table_console().print(table)

    @keys.command("revoke")
    def revoke(
        key_id: str = typer.Argument(..., help="The key's id (key_…), from `aiestack keys list`."),
    ) -> None:
        """Revoke a key. Running gateways refuse it within a few seconds."""
        from aiestack.gateway.keys import display_key

        with open_key_service() as service:
            record = service.revoke(key_id)
        typer.echo(
            f"Revoked key {record.id} ({display_key(record)}, tenant {record.tenant}) "
            f"at {_when(record.revoked_at)}."
        )

    app.add_typer(keys, name="keys")
