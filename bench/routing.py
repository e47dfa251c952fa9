"""Semantic routing: test accuracy of the router on a labelled set of support requests, per embedder.

``bench/data/routing.jsonl`` holds 230 utterances written for this benchmark: five intents
(billing, tech_support, shipping, account, sales) and out-of-scope requests (route null), split
train / test within each intent. The train utterances of each intent are its route's examples;
thresholds are fitted on the train split (``fit_thresholds``, each example scored without itself,
the way ``aiestack routes fit`` does it) and every figure is on the test split.

Two embedders, in one run: the packaged static embedder (``[router] embedder = "static"``, the
default: a Model2Vec distillation of MiniLM, about 0.1 ms a question) and all-MiniLM-L6-v2
(``embedder = "embeddings"``, the ``[embeddings]`` model). For each, the anchor is a plain
nearest-example classifier: always the route of the closest example, so it can never say "none of
these" (out-of-scope requests go to some intent). Rows compare it with one global threshold, with
per-route thresholds, and with the default threshold of ``[router]`` (what a route gets when no
one fits it), for ``max`` (closest example) and ``centroid``. The last lines give the static
embedder's accuracy as a ratio to MiniLM's for the default method, and each embedder's time per
question (one at a time, the way the router embeds them).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/routing.py                 # --embedders static,minilm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from aiestack.gateway.semantic_router import GRID, SemanticRouter, accuracy, choose, fit_thresholds
from aiestack.models.base import EmbeddingModel
from aiestack.settings import RouterSettings

DATA = Path(__file__).parent / "data" / "routing.jsonl"
NAMES = {"static": "static MiniLM (model2vec)", "minilm": "all-MiniLM-L6-v2"}

Row = tuple[str, float, dict[str, float]]


def _per_intent(
    scores: list[dict[str, float]], labels: list[str | None], thresholds: dict[str, float]
) -> dict[str, float]:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for s, label in zip(scores, labels, strict=True):
        choice = choose(s, thresholds, "")
        predicted = choice.route if choice.matched else None
        key = label or "(out of scope)"
        total[key] += 1
        right[key] += predicted == label
    return {k: right[k] / total[k] for k in sorted(total)}


def _model(name: str) -> EmbeddingModel:
    if name == "static":
        from aiestack.models.static_embeddings import StaticEmbeddings

        return StaticEmbeddings()
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    return SentenceTransformerEmbeddings("all-MiniLM-L6-v2")


async def _rows(
    model: EmbeddingModel, train: list[dict], test: list[dict]
) -> tuple[list[Row], dict[str, float]]:
    """The table's rows for one embedder, and the fitted thresholds of the default method."""
    examples: dict[str, list[str]] = {}
    for r in train:
        if r["route"]:
            examples.setdefault(r["route"], []).append(r["text"])
    default = RouterSettings()
    results: list[Row] = []
    test_labels = [r["route"] for r in test]
    train_labels = [r["route"] for r in train]
    fitted_default: dict[str, float] = {}
    for method in ("max", "centroid"):
        router = SemanticRouter(examples, model, default_route="", method=method)
        train_scores = await router.batch_scores([r["text"] for r in train], leave_out=True)
        test_scores = await router.batch_scores([r["text"] for r in test])

        def row(name: str, thresholds: dict[str, float], scores: list[dict[str, float]] = test_scores) -> Row:
            return (
                name,
                accuracy(scores, test_labels, thresholds),
                _per_intent(scores, test_labels, thresholds),
            )

        def uniform_at(t: float) -> dict[str, float]:
            return dict.fromkeys(examples, t)

        if method == "max":
            results.append(row("nearest example, no threshold (anchor)", uniform_at(-1.0)))
        best = max(GRID, key=lambda t: accuracy(train_scores, train_labels, uniform_at(t)))
        fitted = fit_thresholds(train_scores, train_labels, list(examples))
        results.append(row(f"{method}, one threshold {best:.2f} (fitted on train)", uniform_at(best)))
        results.append(row(f"{method}, per-route thresholds (routes fit)", fitted))
        results.append(
            row(
                f"{method}, [router] threshold {default.threshold:.2f} (unfitted)",
                uniform_at(default.threshold),
            )
        )
        if method == default.method:
            fitted_default = fitted
    return results, fitted_default


async def _per_question_ms(model: EmbeddingModel, texts: list[str]) -> float:
    """Median time to embed one question, one call per question (after a warm-up call)."""
    await model.embed(texts[:1])
    times = []
    for text in texts:
        start = time.perf_counter()
        await model.embed([text])
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedders", default="static,minilm", help="comma-separated: static, minilm")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chosen = [e.strip() for e in args.embedders.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in NAMES]
    if unknown:
        raise SystemExit(f"unknown embedder(s) {unknown}: choose from {', '.join(NAMES)}")
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    routes = {r["route"] for r in train if r["route"]}
    print(
        f"{len(rows)} utterances, {len(routes)} intents + out of scope; train {len(train)}, test {len(test)}\n"
    )
    default = RouterSettings()
    headline: dict[str, float] = {}
    speed: dict[str, float] = {}
    for name in chosen:
        model = _model(name)
        results, fitted = await _rows(model, train, test)
        speed[name] = await _per_question_ms(model, [r["text"] for r in test])
        await model.aclose()
        anchor = results[0][1]
        intents = list(results[0][2])
        print(f"### {NAMES[name]}\n")
        print(
            f"fitted thresholds ({default.method}): "
            + ", ".join(f"{k} {v:.2f}" for k, v in fitted.items())
            + "\n"
        )
        print("| router | test accuracy | vs anchor | " + " | ".join(intents) + " |")
        print("|---|---:|---:|" + "---:|" * len(intents))
        for label, acc, per in results:
            print(
                f"| {label} | {acc:.3f} | {acc / anchor:.2f}× | "
                + " | ".join(f"{per[i]:.2f}" for i in intents)
                + " |"
            )
            if label.startswith(f"{default.method}, one threshold"):
                headline[name] = acc
        print()
    for name in chosen:
        print(
            f"{NAMES[name]}: {default.method}, one fitted threshold: test accuracy {headline[name]:.3f}; "
            f"{speed[name]:.3f} ms per question (p50, one at a time)"
        )
    if "static" in headline and "minilm" in headline:
        print(
            f"static ÷ MiniLM accuracy: {headline['static'] / headline['minilm']:.3f}; "
            f"time per question {speed['static'] / speed['minilm']:.3f}×"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
