"""``aiestack chat``: send one prompt through the pipeline and stream the answer to the terminal."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from aiestack.errors import AiestackError, GuardrailBlocked, InvalidRequest

if TYPE_CHECKING:
    from aiestack.types import Completion


def _load_schema(path: Path) -> dict[str, Any]:
    import jsonschema

    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest(
            f"The schema file {path} does not exist.", hint="Pass the path of a JSON Schema file."
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{path} is not valid JSON ({exc}).", hint="Fix the JSON Schema file.") from None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"{path} is not a valid JSON Schema: {exc.message}.", hint="Fix the schema."
        ) from None
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"{path} must hold a JSON object schema.", hint='Start it with {"type": "object", ...}.'
        )
    return schema


def _stats(final: Completion, exchange_id: str, total_s: float) -> str:
    """The statistics line. ``total_s`` is the whole request as ``logs`` shows it (guards, cache,
    the model and the stream); the model's own time follows it in brackets."""
    t, u = final.timing, final.usage
    parts = [final.model, f"{u.input_tokens} in / {u.output_tokens} out tokens"]
    if final.cached:  # zero tokens, zero cost and no generation time: say why
        parts.insert(1, "cached")
    if t.ttft_ms is not None:
        parts.append(f"TTFT {t.ttft_ms:.0f} ms")
    if t.tpot_ms is not None:
        parts.append(
            f"TPOT {t.tpot_ms:.1f} ms ({1000 / t.tpot_ms:.0f} tok/s)" if t.tpot_ms > 0 else "TPOT 0 ms"
        )
    parts.append(f"{total_s:.2f} s" + (f" (model {t.total_ms / 1000:.2f} s)" if not final.cached else ""))
    if final.cost_usd is not None:
        parts.append(f"${final.cost_usd:.6f}")
    parts.append(f"finish {final.finish_reason}")
    parts.append(exchange_id)
    return " · ".join(parts)


def register(app: typer.Typer) -> None:
    @app.command()
    def chat(
        prompt: str = typer.Argument(None, help="The prompt; '-' or nothing reads it from standard input."),
        model: str = typer.Option("", "--model", "-m", help="A configured model (default: default_model)."),
        system: str = typer.Option("", "--system", "-s", help="A system message."),
        json_schema: Path = typer.Option(
            None, "--json-schema", help="Constrain the answer to this JSON Schema."
        ),
        temperature: float = typer.Option(None, "--temperature", "-t", help="Sampling temperature."),
        top_p: float = typer.Option(None, "--top-p"),
        top_k: int = typer.Option(None, "--top-k"),
        max_tokens: int = typer.Option(None, "--max-tokens", "-n", help="Most tokens to generate."),
        seed: int = typer.Option(None, "--seed"),
        stop: list[str] = typer.Option([], "--stop", help="A stop sequence (repeatable)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the answer, no statistics."),
    ) -> None:
        """Stream an answer from a model (the embedded Gemma 3 270M by default)."""
        import asyncio

        from aiestack.build import open_stack
        from aiestack.settings import load_settings
        from aiestack.streams import Accumulator
        from aiestack.types import ChatRequest, Message, Params, ResponseFormat

        if prompt is None or prompt == "-":
            if sys.stdin.isatty():
                raise InvalidRequest(
                    "No prompt given.", hint='Run: aiestack chat "your prompt" (or pipe it in).'
                )
            prompt = sys.stdin.read()
        if not prompt.strip():
            raise InvalidRequest("The prompt is empty.", hint='Run: aiestack chat "your prompt".')
        response_format = None
        if json_schema is not None:
            schema = _load_schema(json_schema)
            response_format = ResponseFormat(type="json_schema", schema=schema, name=json_schema.stem)
            if max_tokens is None:
                max_tokens = 1024
        messages = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
        params = Params(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_tokens,
            seed=seed,
            stop=tuple(stop),
            response_format=response_format,
        )
        settings = load_settings()
        request = ChatRequest(
            model=model or settings.default_model, messages=messages, params=params, stream=True
        )
        out, err = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)

        async def run() -> Completion:
            async with open_stack(settings) as stack:
                started = time.perf_counter()
                ex = await stack.chat(request)
                if ex.completion is None:  # a stage ended the request (e.g. a guardrail blocked it)
                    raise ex.error or AiestackError("The pipeline ended without an answer.")
                assert ex.completion.stream is not None
                acc = Accumulator(ex.completion)
                async for delta in ex.completion.stream:
                    acc.add(delta)
                    if delta.text:
                        sys.stdout.write(delta.text)
                        sys.stdout.flush()
                total_s = time.perf_counter() - started
                sys.stdout.write("\n")
                final = acc.completion()
                if not quiet:
                    err.print(f"[dim]{_stats(final, ex.id, total_s)}[/]")
                return final

        try:
            final = asyncio.run(run())
        except GuardrailBlocked as exc:
            if exc.guard != "json_schema":
                raise
            sys.stdout.write("\n")
            err.print(f"[red]The answer does not validate against the schema:[/] {exc.message}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("\n[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        if json_schema is not None:
            _check_json(final.text, schema, final.finish_reason, err)
        del out


def _check_json(text: str, schema: dict[str, Any], finish: str | None, err: Console) -> None:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
        why = "the answer was cut at max_tokens" if finish == "length" else str(exc).splitlines()[0]
        err.print(f"[red]The answer does not validate against the schema:[/] {why}")
        raise typer.Exit(1) from None
