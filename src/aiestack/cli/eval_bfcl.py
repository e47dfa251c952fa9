"""``aiestack eval bfcl``: the Berkeley Function Calling Leaderboard on any configured model or route.

One table row per category: accuracy by BFCL's AST rules, the entries no answer can pass (BFCL v4
data that contradicts itself), invalid tool calls, median latency and cost. The data is read from
disk, never downloaded here (``--import-wheel`` copies it out of a ``bfcl-eval`` wheel once).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from aiestack.cli.console import table_console


def register(evals: typer.Typer) -> None:
    @evals.command("bfcl")
    def bfcl(
        model: str = typer.Option(None, "--model", "-m", help="The configured model or route to score."),
        category: list[str] = typer.Option([], "--category", help="Only these categories (repeatable; default: all)."),
        limit: int = typer.Option(None, "--limit", "-n", min=1, help="The first N entries of each category."),
        protocol: str = typer.Option(
            "auto", "--protocol", help="native (OpenAI tools), json (grammar-constrained JSON) or auto (json for the embedded model)."
        ),
        concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Questions in flight."),
        max_tokens: int = typer.Option(512, "--max-tokens", min=16, help="Output tokens per answer."),
        data: Path = typer.Option(None, "--data", help="A folder holding the BFCL v4 JSON files."),
        import_wheel: Path = typer.Option(
            None, "--import-wheel", help="Copy the BFCL data out of a bfcl-eval wheel (pip download bfcl-eval --no-deps), then exit."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    ) -> None:
        """Score a model or route on BFCL v4 (single-turn categories, AST matching), a table per category."""
        from aiestack.evals.bfcl import data as bfcl_data

        if import_wheel is not None:
            where = bfcl_data.import_wheel(import_wheel, data)
            Console(stderr=True).print(f"BFCL data imported into {where}")
            return
        if not model:
            raise typer.BadParameter("name the model or route to score with --model", param_hint="--model")
        if protocol not in ("auto", "native", "json"):
            raise typer.BadParameter("use native, json or auto", param_hint="--protocol")
        folder = bfcl_data.find_data(data)
        categories = category or list(bfcl_data.CATEGORIES)
        entries = [e for c in categories for e in bfcl_data.load(c, folder, limit=limit)]
        import asyncio

        rows = asyncio.run(_run(model, entries, protocol, concurrency, max_tokens))
        if as_json:
            print(json.dumps(rows))
            return
        _print(rows, model)


async def _run(model: str, entries: list[Any], protocol: str, concurrency: int, max_tokens: int) -> list[dict[str, Any]]:
    from aiestack.build import open_stack
    from aiestack.evals.bfcl.checker import unanswerable
    from aiestack.evals.bfcl.runner import by_category, run_entries
    from aiestack.settings import load_settings

    async with open_stack(load_settings()) as stack:
        chosen = protocol if protocol != "auto" else ("json" if _embedded(stack, model) else "native")
        outcomes = await run_entries(stack.chat, model, entries, protocol=chosen, concurrency=concurrency, max_tokens=max_tokens)  # type: ignore[arg-type]
    return [
        {
            "category": r.category,
            "protocol": chosen,
            "entries": len(r.outcomes),
            "accuracy": r.accuracy,
            "unanswerable": sum(1 for o in r.outcomes if unanswerable(o.entry.functions, o.entry.answers)),
            "invalid_calls": r.invalid_calls,
            "failed_calls": sum(1 for o in r.outcomes if o.check.error_type == "call_failed"),
            "p50_ms": r.p50_ms,
            "cost_usd": r.cost_usd,
        }
        for r in by_category(outcomes)
    ]


def _embedded(stack: Any, name: str) -> bool:
    """Whether ``name`` (a model, or a route's first deployment) is the in-process llama.cpp model (no native tools)."""
    if name in stack.routes:
        name = stack.routes.config(name).deployments[0].model
    if name not in stack.models:
        import random

        stack.routes.plan(name, random.Random(0))  # names nothing: the gateway's "does not exist" error, before any call
        return False
    return bool(stack.models.resolve(name).provider.provider == "llama_cpp")


def _print(rows: list[dict[str, Any]], model: str) -> None:
    protocol = rows[0]["protocol"] if rows else "?"
    table = Table(title=f"BFCL v4 · {model} · protocol {protocol}")
    for column in ("category", "entries", "accuracy", "unanswerable", "invalid calls", "failed calls", "p50 ms", "cost $"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for r in rows:
        table.add_row(
            r["category"], str(r["entries"]), f"{r['accuracy']:.3f}", str(r["unanswerable"]), str(r["invalid_calls"]),
            str(r["failed_calls"]), f"{r['p50_ms']:.0f}", f"{r['cost_usd']:.4f}",
        )
    total = sum(r["entries"] for r in rows)
    if total:
        right = sum(r["accuracy"] * r["entries"] for r in rows)
        table.add_row("all (micro)", str(total), f"{right / total:.3f}", str(sum(r["unanswerable"] for r in rows)),
                      str(sum(r["invalid_calls"] for r in rows)), str(sum(r["failed_calls"] for r in rows)), "", f"{sum(r['cost_usd'] for r in rows):.4f}")
    table_console(highlight=False).print(table)
