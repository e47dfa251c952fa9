"""``aiestack bench load``: latency and throughput of any OpenAI-compatible endpoint under load."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from aiestack.cli.console import table_console

if TYPE_CHECKING:
    from aiestack.loadbench import LevelStats, Report
    from aiestack.stores.base import ExchangeRecord


def _floats(text: str | None, option: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
    if any(v <= 0 for v in values):
        raise typer.BadParameter("every value must be above 0", param_hint=option)
    return values


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks of a running endpoint.", no_args_is_help=True)
    app.add_typer(bench, name="bench")

    @bench.command("load")
    def load(
        url: str = typer.Option(
            "http://127.0.0.1:8000/v1", "--url", help="The API base URL (…/v1) of any OpenAI-compatible server."
        ),
        model: str = typer.Option(None, "--model", "-m", help="Model to ask for (default: the configured default_model)."),
        api_key_env: str = typer.Option(
            "AIESTACK_API_KEY", "--api-key-env", help="Environment variable holding the API key (sent as Bearer)."
        ),
        concurrency: str = typer.Option(
            None, "--concurrency", "-c", help="Closed-loop levels, e.g. 1,16,64 (default when no --rate: 1,4,16)."
        ),
        rate: str = typer.Option(None, "--rate", "-r", help="Open-loop Poisson request rates (req/s), e.g. 1,2,4."),
        requests: int = typer.Option(None, "--requests", "-n", min=1,
                                     help="Requests per level (default: max(32, 4×concurrency); 64 per rate)."),
        duration: float = typer.Option(None, "--duration", min=0.1, help="Seconds per level instead of --requests."),
        max_concurrency: int = typer.Option(None, "--max-concurrency", min=1,
                                            help="Cap on requests in flight in open-loop levels."),
        input_len: str = typer.Option("256", "--input-len", help="Prompt tokens: N, uniform:LO,HI, normal:MEAN,SD, exponential:MEAN."),
        output_len: str = typer.Option("128", "--output-len", help="Output tokens asked for (same forms)."),
        prefix_len: int = typer.Option(0, "--prefix-len", min=0, help="Words of a prefix shared by every synthetic prompt."),
        dataset: Path = typer.Option(None, "--dataset", help="JSON Lines (prompt/messages) or ShareGPT JSON file."),
        replay: int = typer.Option(None, "--replay", min=1,
                                   help="Replay the N latest stored exchanges (lengths and arrival gaps)."),
        speedup: float = typer.Option(1.0, "--speedup", min=0.001, help="Replay arrivals this many times faster."),
        slo: str = typer.Option(None, "--slo", help="SLOs for goodput, e.g. ttft=500ms,tpot=50ms,e2e=10s."),
        ignore_eos: bool = typer.Option(False, "--ignore-eos",
                                        help="Ask for exactly --output-len tokens (vLLM's ignore_eos/min_tokens)."),
        seed: int = typer.Option(0, "--seed", help="Seed for lengths, prompts and arrival times."),
        cache_bypass: bool = typer.Option(
            True, "--cache-bypass/--no-cache-bypass",
            help="Send metadata.cache = off (aiestack's caches stay out); turn off for servers that refuse metadata.",
        ),
        json_out: Path = typer.Option(None, "--json", help="Write the report as JSON to this file."),
        html_out: Path = typer.Option(None, "--html", help="Write the report as HTML (charts) to this file."),
    ) -> None:
        """Drive URL with concurrent streamed chat completions and report TTFT, TPOT, ITL, e2e and throughput.

        Closed loop (--concurrency) sends each client's next request when its last one ends; open
        loop (--rate) sends at Poisson arrivals whatever the server does. Requests to aiestack bypass
        its caches (metadata.cache = off). Definitions: docs/load-bench.md.
        """
        from aiestack.loadbench import (
            Endpoint,
            Plan,
            Report,
            from_dataset,
            from_exchanges,
            measure,
            parse_length,
            parse_slo,
            render_html,
            synthetic,
        )

        out = table_console(highlight=False)  # a log keeps every column
        levels_c = tuple(int(c) for c in _floats(concurrency, "--concurrency"))
        levels_r = _floats(rate, "--rate")
        if not levels_c and not levels_r and replay is None:
            levels_c = (1, 4, 16)
        if model is None:
            from aiestack.settings import load_settings

            model = load_settings().default_model
        outputs = parse_length(output_len, option="--output-len")
        count = max(256, requests or 0, *(4 * c for c in levels_c))
        if replay is not None:
            workload = from_exchanges(_stored_exchanges(replay), seed=seed)
        elif dataset is not None:
            workload = from_dataset(dataset, default_output=outputs, seed=seed)
        else:
            workload = synthetic(parse_length(input_len, option="--input-len"), outputs,
                                 count=count, seed=seed, prefix_len=prefix_len)
        plan = Plan(concurrency=levels_c, rates=levels_r, replay=replay is not None, requests=requests,
                    duration_s=duration, max_concurrency=max_concurrency, speedup=speedup, seed=seed,
                    slo=parse_slo(slo))
        endpoint = Endpoint(url, model, os.environ.get(api_key_env) or None, ignore_eos=ignore_eos,
                            bypass_cache=cache_bypass)
        out.print(f"{endpoint.url} · model {model} · {workload.source} · SLOs {plan.slo.describe()}")

        def progress(stats: LevelStats) -> None:
            from aiestack.loadbench.report import table_rows

            row = table_rows([stats])[0]
            out.print(f"  {row[0]} {row[1]}: {row[2]} ok, {row[3]} errors · TTFT p50 {row[4]} ms · "
                      f"TPOT p50 {row[6]} ms · {row[11]} tok/s · {row[12]} req/s")

        started = time.time()
        try:
            levels = measure(endpoint, workload, plan, progress)
        except ConnectionError as exc:
            Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        report = Report(url, model, workload.source, plan.slo, tuple(levels), started)
        _print_table(out, report)
        if json_out is not None:
            json_out.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
            out.print(f"JSON: {json_out}")
        if html_out is not None:
            html_out.write_text(render_html(report), encoding="utf-8")
            out.print(f"HTML: {html_out}")
        if any(level.errors for level in levels):
            raise typer.Exit(1)


def _stored_exchanges(limit: int) -> list[ExchangeRecord]:
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    try:
        store.migrate()
        return list(store.list_exchanges(limit=limit))
    finally:
        store.close()


def _print_table(out: Console, report: Report) -> None:
    from aiestack.loadbench.report import TABLE_HEADER, client_bound_note, table_rows

    table = Table(title="Latency (ms) and throughput", title_justify="left")
    for i, header in enumerate(TABLE_HEADER):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in table_rows(report.levels):
        table.add_row(*row)
    out.print(table)
    if (note := client_bound_note(report.levels)) is not None:
        out.print(note, style="yellow", highlight=False)
