"""``aiestack redteam ROUTE``: send the probe families through a route and report attack success rates."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from aiestack.cli.console import table_console


def register(app: typer.Typer) -> None:
    @app.command()
    def redteam(
        route: str = typer.Argument(..., help="The route (or model) to attack, as a client would name it."),
        family: list[str] = typer.Option(
            None, "--family", "-f",
            help="Probe family to run (repeat for several; default: all). "
            "direct_injection, indirect_injection, jailbreak_persona, system_prompt_leak, pii_extraction, encoding.",
        ),
        judge: str = typer.Option(None, "--judge", help="A route or model that also judges each answer (YES/NO)."),
        concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=64, help="Attempts in flight."),
        json_out: Path = typer.Option(None, "--json", help="Also write the whole report as JSON to this file."),
        max_asr: float = typer.Option(
            None, "--max-asr", min=0.0, max=1.0, help="Exit 1 when a family's attack success rate is above this (a CI gate)."
        ),
    ) -> None:
        """Attack ROUTE with prompt-injection, jailbreak, leak and encoding probes; print the success rate per family.

        Every attempt is an exchange in the store: open the ones that succeeded in the console
        (/exchanges/<id>) to see what the model said and which guards ran.
        """
        from aiestack.build import open_stack
        from aiestack.redteam import FAMILIES, RedteamReport, run_redteam
        from aiestack.redteam.collections import StoreCollections
        from aiestack.settings import load_settings

        families = tuple(family) if family else FAMILIES
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise typer.BadParameter(f"unknown family {', '.join(unknown)}; choose from {', '.join(FAMILIES)}",
                                     param_hint="--family")
        settings = load_settings()

        async def run() -> RedteamReport:
            async with open_stack(settings) as stack:
                # Indirect injection also goes through a scratch collection in the stack's document store.
                collections = StoreCollections(stack.resources.documents, stack.resources.embeddings)
                return await run_redteam(
                    lambda request, exchange_id: stack.chat(request, id=exchange_id),
                    route, families=families, judge=judge, concurrency=concurrency, collections=collections,
                )

        import asyncio

        report = asyncio.run(run())
        if report.attempts and all(a.outcome == "error" for a in report.attempts):
            Console(stderr=True).print(f"[red]Every attempt failed:[/] {report.attempts[0].error}")
            raise typer.Exit(1)
        _print(report)
        if json_out is not None:
            json_out.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
        if max_asr is not None and any(f.asr > max_asr for f in report.families):
            raise typer.Exit(1)


def _print(report: object) -> None:
    from aiestack.redteam import RedteamReport

    assert isinstance(report, RedteamReport)
    out = table_console()
    judged = any(f.judged_succeeded is not None for f in report.families)
    table = Table(title=f"red team of '{report.route}'", show_edge=False)
    for column in ("family", "attempts", "blocked", "succeeded", "resisted", "errors", "ASR"):
        table.add_column(column, justify="left" if column == "family" else "right")
    if judged:
        table.add_column("judge: succeeded", justify="right")
    for f in report.families:
        row = [f.family, str(f.attempts), str(f.blocked), str(f.succeeded), str(f.resisted), str(f.errors),
               f"{f.asr:.0%}"]
        if judged:
            row.append(str(f.judged_succeeded))
        table.add_row(*row)
    out.print(table)
    out.print("ASR = succeeded / (attempts − errors); blocked = stopped by a guardrail.")
    if report.succeeded:
        out.print("\n[bold]Attacks that worked[/] (open them in the console):")
        for attempt in report.succeeded:
            how = "detector" if attempt.outcome == "succeeded" else "judge only"
            out.print(f"  {attempt.family}/{attempt.probe} ({how}): /exchanges/{attempt.exchange_id}")
