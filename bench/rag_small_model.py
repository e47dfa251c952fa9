"""RAG context sized for a small model: how many sources, how long, for the embedded Gemma 3 270M.

Asks questions about aiestack's own docs (ingested as the README says: ``aiestack ingest docs/
--collection aiestack-docs``) through the stack, on the embedded model, at temperature 0, once per
context size (``k`` sources of at most ``chars`` characters each). For each size it reports the
prompt tokens, the latency, how often the *model's own* answer carries the expected fact (not the
extractive fallback: ``aiestack.rag.extractive`` unset), and how often the final answer does. The
anchor is the old default (5 sources of 1,500 characters), measured in the same run.

    AIESTACK_DATA_DIR=/tmp/rag .venv/bin/python -m aiestack ingest docs/ --collection aiestack-docs
    AIESTACK_DATA_DIR=/tmp/rag .venv/bin/python bench/rag_small_model.py [--sizes 5x1500,3x600,2x600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aiestack import ChatRequest, Message, Params, load_settings, open_stack
from aiestack.context.extractive import RAG_EXTRACTIVE

#: (question, a fact the answer must carry), each documented in docs/.
QUESTIONS = (
    ("How do I revoke an API key?", "keys revoke"),
    ("How do I create an API key?", "keys create"),
    ("Which response header says whether the answer came from the cache?", "x-aiestack-cache"),
    ("Which environment variable holds the admin key?", "AIESTACK_ADMIN_KEY"),
    ("How do I ingest documents into a collection?", "aiestack ingest"),
    ("What is the default similarity threshold of the semantic cache?", "0.8"),
    ("How do I list the configured models?", "aiestack models"),
    ("Which command starts the OpenAI-compatible server?", "aiestack serve"),
)


async def _ask(stack, question: str, k: int, chars: int, max_tokens: int = 96) -> tuple[str, bool, int, float]:  # type: ignore[no-untyped-def]
    request = ChatRequest(
        model=f"rag-{k}x{chars}",
        messages=(Message("user", question),),
        params=Params(temperature=0.0, max_tokens=max_tokens),
        metadata={"cache": "off"},
    )
    started = time.perf_counter()
    ex = await stack.chat(request, tenant="default")
    elapsed = time.perf_counter() - started
    assert ex.completion is not None, ex.error
    return ex.completion.text, bool(ex.attributes.get(RAG_EXTRACTIVE)), ex.completion.usage.input_tokens, elapsed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5x1500,3x600,3x900,2x600")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    questions = QUESTIONS[: args.questions]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    routes = {
        f"rag-{k}x{chars}": {"deployments": ["gemma-3-270m"], "collection": "aiestack-docs", "rag": {"k": k, "max_source_chars": chars}}
        for k, chars in [*sizes, (1, 100)]
    }
    async with open_stack(load_settings(routes=routes)) as stack:
        await _ask(stack, QUESTIONS[0][0], 1, 100)  # the model loaded
        print(f"load average {os.getloadavg()[0]:.1f}; {len(questions)} questions, embedded Gemma 3 270M, temperature 0, max_tokens {args.max_tokens}\n", flush=True)
        print("| sources × chars | prompt tokens (mean) | latency p50 s | model's own answer has the fact | final answer has the fact |")
        print("|---|---:|---:|---:|---:|")
        for k, chars in sizes:
            tokens, times, own, final = [], [], 0, 0
            for question, fact in questions:
                text, extractive, prompt_tokens, elapsed = await _ask(stack, question, k, chars, args.max_tokens)
                model_part = text.split("Extractive answer")[0]
                own += fact.lower() in model_part.lower() and not extractive
                final += fact.lower() in text.lower()
                tokens.append(prompt_tokens)
                times.append(elapsed)
            n = len(questions)
            print(f"| {k} × {chars} | {statistics.mean(tokens):.0f} | {statistics.median(times):.2f} | {own}/{n} | {final}/{n} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
