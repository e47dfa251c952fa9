"""Semantic routing: test accuracy of the router on a labelled set of support requests.

``bench/data/routing.jsonl`` holds 230 utterances written for this benchmark: five intents
(billing, tech_support, shipping, account, sales) and out-of-scope requests (route null), split
train / test within each intent. The train utterances of each intent are its route's examples;
thresholds are fitted on the train split (``fit_thresholds``, each example scored without itself,
the way ``aiestack routes fit`` does it) and every figure is on the test split. Embeddings:
all-MiniLM-L6-v2.

The anchor is a plain nearest-example classifier: always the route of the closest example, so it
can never say "none of these" (out-of-scope requests go to some intent). Rows compare it with one
global threshold and with per-route thresholds, for ``max`` (closest example) and ``centroid``.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/routing.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

from aiestack.gateway.semantic_router import GRID, SemanticRouter, accuracy, choose, fit_thresholds

DATA = Path(__file__).parent / "data" / "routing.jsonl"


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


async def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    examples: dict[str, list[str]] = {}
    for r in train:
        if r["route"]:
            examples.setdefault(r["route"], []).append(r["text"])
    model = SentenceTransformerEmbeddings("all-MiniLM-L6-v2")
    print(
        f"{len(rows)} utterances, {len(examples)} intents + out of scope; train {len(train)} "
        f"({sum(len(v) for v in examples.values())} examples), test {len(test)} (all-MiniLM-L6-v2)\n"
    )
    results: list[tuple[str, float, dict[str, float]]] = []
    test_labels = [r["route"] for r in test]
    train_labels = [r["route"] for r in train]
    for method in ("max", "centroid"):
        router = SemanticRouter(examples, model, default_route="", method=method)
        train_scores = await router.batch_scores([r["text"] for r in train], leave_out=True)
        test_scores = await router.batch_scores([r["text"] for r in test])
        if method == "max":
            nearest = dict.fromkeys(examples, -1.0)
            results.append(
                (
                    "nearest example, no threshold (anchor)",
                    accuracy(test_scores, test_labels, nearest),
                    _per_intent(test_scores, test_labels, nearest),
                )
            )
        def uniform_at(t: float) -> dict[str, float]:
            return dict.fromkeys(examples, t)

        best = max(GRID, key=lambda t: accuracy(train_scores, train_labels, uniform_at(t)))
        uniform = uniform_at(best)
        fitted = fit_thresholds(train_scores, train_labels, list(examples))
        results.append(
            (
                f"{method}, one threshold {best:.2f}",
                accuracy(test_scores, test_labels, uniform),
                _per_intent(test_scores, test_labels, uniform),
            )
        )
        results.append(
            (
                f"{method}, per-route thresholds (routes fit)",
                accuracy(test_scores, test_labels, fitted),
                _per_intent(test_scores, test_labels, fitted),
            )
        )
        if method == "max":
            print("fitted thresholds (max): " + ", ".join(f"{k} {v:.2f}" for k, v in fitted.items()) + "\n")
    await model.aclose()
    anchor = results[0][1]
    intents = list(results[0][2])
    print("| router | test accuracy | vs anchor | " + " | ".join(intents) + " |")
    print("|---|---:|---:|" + "---:|" * len(intents))
    for name, acc, per in results:
        print(
            f"| {name} | {acc:.3f} | {acc / anchor:.2f}× | "
            + " | ".join(f"{per[i]:.2f}" for i in intents)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
