"""How often the embedded model's schema-constrained answer validates: the README's JSON example, repeated.

Each run is what ``aiestack chat --json-schema SCHEMA PROMPT`` does (the whole pipeline in-process,
guards included, unseeded, ``max_tokens`` 1,024 as the CLI sets with a schema), on a throw-away data
directory. An answer counts as valid when the pipeline returns one (the ``json_schema`` guard
validated it; a cut-off or invalid answer is blocked after its re-asks). Prints each answer's finish
reason and the valid count; exits 1 when any run failed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/structured_output.py                 # examples/person.json, 40 runs
    HF_HUB_OFFLINE=1 .venv/bin/python bench/structured_output.py --schema my.json --runs 10 --prompt "..."
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def run(schema: dict, prompt: str, runs: int, max_tokens: int) -> int:
    from aiestack.build import open_stack
    from aiestack.settings import load_settings
    from aiestack.types import ChatRequest, Message, Params, ResponseFormat

    settings = load_settings()
    valid = 0
    async with open_stack(settings) as stack:
        for i in range(runs):
            params = Params(
                max_tokens=max_tokens, response_format=ResponseFormat(type="json_schema", schema=schema, name="bench")
            )
            request = ChatRequest(
                model=settings.default_model, messages=(Message("user", prompt),), params=params, stream=False
            )
            ex = await stack.chat(request)
            if ex.completion is not None:
                valid += 1
                print(f"{i:3d} {ex.completion.finish_reason} {len(ex.completion.text)} chars", flush=True)
            else:
                print(f"{i:3d} failed: {str(ex.error).splitlines()[0]}", flush=True)
    return valid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema", type=Path, default=ROOT / "examples" / "person.json")
    ap.add_argument("--prompt", default="Invent a person")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=1024)
    args = ap.parse_args()
    schema = json.loads(args.schema.read_text())
    with tempfile.TemporaryDirectory() as data:
        os.environ["AIESTACK_DATA_DIR"] = data
        os.chdir(data)  # no aiestack.toml of the caller's: the embedded defaults
        valid = asyncio.run(run(schema, args.prompt, args.runs, args.max_tokens))
    print(f"valid {valid} of {args.runs} ({args.schema.name}, max_tokens {args.max_tokens})")
    return 0 if valid == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
