"""Curation: does dedup remove the planted duplicates and nothing else, how fast, and does the
contamination check find planted eval items without flagging clean rows?

Part 1, dedup quality, on a labelled set built from real text:
- base rows: SciFact corpus documents (title as the question, the abstract's first 600 characters as
  the answer; ../shared/data/scifact), and both sides of every near-miss pair of
  bench/data/cache_pairs.jsonl (negations, other numbers, entities, units, antonyms: distinct
  questions that embed close together — hard negatives that must all be kept);
- planted **exact** duplicates: a base row again with other case, punctuation and spacing;
- planted **near** duplicates: a base row with about 5% of the answer's words dropped, replaced or
  inserted (seeded);
- planted **paraphrases**: the other side of each paraphrase pair of cache_pairs.jsonl (its first side
  is a base row), both answered with the same text (an unused SciFact abstract): the same question
  asked in other words. The near-miss questions get distinct answers (other unused abstracts).
- the verifier's stress test, reported apart: each near-miss pair with one *shared* answer, so that the
  two rows differ only where their questions do and embed close together; only the verifier's checks
  on the questions keep them apart (the semantic step alone, as the semantic cache would decide).
Planted rows come after their originals (a dataset built oldest first keeps the first). The steps run
as ``aiestack datasets curate --steps exact,near,semantic`` runs them (MiniLM, cosine 0.8 + the
cache's lexical verifier). Reported per kind: recall (planted rows removed); per step: precision
(removed rows that were planted duplicates). Target: precision ≥ 0.95 and recall ≥ 0.9 per kind.

Part 2, throughput: the near-dedup step against datasketch used directly (the same MinHash
signatures and LSH, without our exact-Jaccard confirmation), same rows, same run; rows/s and ratio.
(text-dedup is not installed: it pulls in ``datasets`` and a Spark/Ray stack; datasketch is the
library it wraps for MinHash.)

Part 3, contamination: eval items are GSM8K test questions with their answers; the training set is
other GSM8K test questions (same templates: the hard case) and SciFact rows, with eval items planted
verbatim and lightly edited (numbers changed, a few words replaced, a prefix added). Target: recall ≥
0.95 on the planted rows, no flag on the clean ones.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dedup.py          # --base 1500 --planted 150 --throughput 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

from aiestack.datasets import DatasetRow, normalise
from aiestack.datasets.contamination import ContaminationCheck, EvalItem
from aiestack.datasets.curate import CurationStep, Embed, ExactDedup, NearDedup, SemanticDedup, run_steps
from aiestack.datasets.shingles import row_text, shingles, words

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "data"


def _row(question: str, answer: str, tag: str) -> DatasetRow:
    return DatasetRow(normalise({"question": question, "answer": answer}, "chat"), {"tag": tag})


def _scifact(limit: int) -> list[tuple[str, str]]:
    out = []
    with (SHARED / "scifact" / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["title"].strip() and len(doc["text"]) > 200:
                out.append((doc["title"].strip(), doc["text"][:600]))
            if len(out) >= limit:
                break
    return out


def _exact_variant(text: str, rng: random.Random) -> str:
    text = text.upper() if rng.random() < 0.5 else text.lower()
    text = re.sub(r"\s+", lambda m: "  " if rng.random() < 0.3 else " ", text)
    return re.sub(r"[,.;]", lambda m: "" if rng.random() < 0.5 else m.group(), text) + " ."


def _near_variant(text: str, rng: random.Random, rate: float = 0.05) -> str:
    tokens = text.split()
    out = []
    for token in tokens:
        roll = rng.random()
        if roll < rate / 3:
            continue  # dropped
        if roll < 2 * rate / 3:
            out.append(rng.choice(["very", "also", "the", "new", "data"]))  # replaced
            continue
        out.append(token)
        if roll < rate:
            out.append(rng.choice(["indeed", "then", "all"]))  # inserted
    return " ".join(out)


def dedup_set(base: int, planted: int, seed: int) -> tuple[list[DatasetRow], dict[str, str]]:
    """The rows in order, and each planted row's kind (by row id)."""
    rng = random.Random(seed)
    docs = _scifact(base)
    rows = [_row(q, a, "base") for q, a in docs]
    pairs = [json.loads(line) for line in (HERE / "data" / "cache_pairs.jsonl").open(encoding="utf-8")]
    spare = iter(_scifact(base + 2 * len(pairs))[base:])  # unused abstracts: distinct answers
    for pair in pairs:
        if pair["label"] == "miss":  # distinct questions, distinct answers
            for side in ("a", "b"):
                rows.append(_row(pair[side], next(spare)[1][:300], "hard-negative"))
    kinds: dict[str, str] = {}
    inserts: list[tuple[int, DatasetRow]] = []
    for kind in ("exact", "near"):
        for i in rng.sample(range(len(docs)), planted):
            q, a = docs[i]
            copy = _row(_exact_variant(q, rng), _exact_variant(a, rng), kind) if kind == "exact" else _row(q, _near_variant(a, rng), kind)
            kinds[copy.id] = kind
            inserts.append((i, copy))
    for pair in pairs:
        if pair["label"] == "hit":
            answer = next(spare)[1][:300]
            rows.append(_row(pair["a"], answer, "base"))
            copy = _row(pair["b"], answer, "paraphrase")  # the same question in other words, answered alike
            kinds[copy.id] = "paraphrase"
            inserts.append((len(rows) - 1, copy))
    out = list(rows)
    for position, copy in sorted(inserts, key=lambda x: -x[0]):  # after its original, anywhere later
        out.insert(rng.randint(position + 1, len(out)), copy)
    return out, kinds


def _embedder() -> Embed:
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    model = SentenceTransformerEmbeddings("all-MiniLM-L6-v2")
    loop = asyncio.new_event_loop()
    return lambda texts: loop.run_until_complete(model.embed(list(texts)))


def part1(args: argparse.Namespace) -> bool:
    rows, kinds = dedup_set(args.base, args.planted, args.seed)
    steps: list[CurationStep] = [ExactDedup(), NearDedup(0.7), SemanticDedup(_embedder(), 0.8)]
    started = time.perf_counter()
    result = run_steps(rows, steps)
    took = time.perf_counter() - started
    planted_by_kind = Counter(kinds.values())
    removed_by_kind: Counter[str] = Counter()
    print(f"\n== dedup quality: {len(rows)} rows ({sum(planted_by_kind.values())} planted duplicates), {took:.1f} s")
    print(f"{'step':10} {'removed':>8} {'planted':>8} {'precision':>10}")
    ok = True
    for report in result.reports:
        hits = [r for r in report.removed if r.row_id in kinds]
        for r in hits:
            removed_by_kind[kinds[r.row_id]] += 1
        precision = len(hits) / len(report.removed) if report.removed else 1.0
        ok &= precision >= 0.95
        print(f"{report.step:10} {len(report.removed):8d} {len(hits):8d} {precision:10.3f}")
    print(f"{'kind':10} {'planted':>8} {'removed':>8} {'recall':>10}")
    for kind in ("exact", "near", "paraphrase"):
        recall = removed_by_kind[kind] / planted_by_kind[kind]
        ok &= recall >= 0.9
        print(f"{kind:10} {planted_by_kind[kind]:8d} {removed_by_kind[kind]:8d} {recall:10.3f}")
    wrongly = [r for r in result.removed if r.row_id not in kinds]
    tags = Counter(next(x.lineage["tag"] for x in rows if x.id == r.row_id) for r in wrongly)
    print(f"distinct rows removed: {len(wrongly)} {dict(tags)}  (target: precision ≥ 0.95, recall ≥ 0.9 per kind)")
    pairs = [json.loads(line) for line in (HERE / "data" / "cache_pairs.jsonl").open(encoding="utf-8")]
    misses = [p for p in pairs if p["label"] == "miss"]
    merged = 0
    for pair in misses:  # each pair alone, so that only its own two rows can meet
        shared = f"The answer, as our guide explains it, with the details that matter ({pair['id']})."
        _, report = steps[2].apply([_row(pair["a"], shared, "a"), _row(pair["b"], shared, "b")])
        merged += len(report.removed)
    print(f"verifier stress: {merged} of {len(misses)} near-miss pairs with a shared answer merged by the semantic step")
    return ok


def _datasketch_direct(rows: list[DatasetRow], threshold: float, ngram: int, num_perm: int) -> int:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    removed = 0
    for i, row in enumerate(rows):
        signature = MinHash(num_perm=num_perm, seed=1)
        signature.update_batch([g.encode() for g in shingles(words(row_text(row.data)), ngram)])
        if lsh.query(signature):
            removed += 1
            continue
        lsh.insert(str(i), signature)
    return removed


def part2(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    docs = _scifact(args.throughput)
    rows = [_row(q, a, "base") for q, a in docs]
    rows += [_row(q, _near_variant(a, rng), "near") for q, a in rng.sample(docs, len(docs) // 10)]
    timings = {}
    for name, run in (
        ("datasketch direct", lambda: _datasketch_direct(rows, 0.7, 3, 128)),
        ("aiestack near", lambda: len(NearDedup(0.7).apply(rows)[1].removed)),
        ("aiestack exact", lambda: len(ExactDedup().apply(rows)[1].removed)),
    ):
        started = time.perf_counter()
        removed = run()
        timings[name] = time.perf_counter() - started
        print(f"{name:18} {len(rows) / timings[name]:9.0f} rows/s  ({removed} removed)")
    print(f"near dedup / datasketch direct: {timings['datasketch direct'] / timings['aiestack near']:.2f}x the throughput")


def _edit_item(text: str, rng: random.Random) -> str:
    text = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text, count=2)
    tokens = text.split()
    for i in rng.sample(range(len(tokens)), max(1, len(tokens) // 25)):
        tokens[i] = rng.choice(["some", "each", "those"])
    return "Problem: " + " ".join(tokens)


def part3(args: argparse.Namespace) -> bool:
    rng = random.Random(args.seed)
    records = [json.loads(line) for line in (SHARED / "gsm8k" / "test.jsonl").open(encoding="utf-8")]
    evals, clean = records[:200], records[200:800]
    items = [EvalItem("gsm8k-test", str(i), (r["question"], r["answer"])) for i, r in enumerate(evals)]
    rows = [_row(r["question"], r["answer"], "clean") for r in clean] + [_row(q, a, "clean") for q, a in _scifact(500)]
    planted = [_row(r["question"], r["answer"], "verbatim") for r in rng.sample(evals, 100)]
    planted += [_row(_edit_item(r["question"], rng), r["answer"].split("####")[-1].strip(), "edited") for r in rng.sample(evals, 100)]
    rows += planted
    rng.shuffle(rows)
    _, report = ContaminationCheck(items, remove=False).apply(rows)
    flagged = {f["row_id"] for f in report.detail["flagged"]}
    print(f"\n== contamination: {len(items)} eval items, {len(rows)} training rows ({len(planted)} planted)")
    ok = True
    for tag in ("verbatim", "edited"):
        group = [r for r in rows if r.lineage["tag"] == tag]
        recall = sum(r.id in flagged for r in group) / len(group)
        ok &= recall >= 0.95
        print(f"{tag:9} recall {recall:.3f} ({len(group)} planted)")
    false_flags = sum(r.id in flagged for r in rows if r.lineage["tag"] == "clean")
    ok &= false_flags == 0
    print(f"clean     flagged {false_flags} of {sum(r.lineage['tag'] == 'clean' for r in rows)}  (target: recall ≥ 0.95, no flags)")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=1500)
    parser.add_argument("--planted", type=int, default=150)
    parser.add_argument("--throughput", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parts", default="1,2,3", help="Which parts to run (1 quality, 2 throughput, 3 contamination).")
    args = parser.parse_args()
    if not (SHARED / "scifact").is_dir():
        sys.exit(f"needs the shared data sets at {SHARED}")
    parts = set(args.parts.split(","))
    quality = part1(args) if "1" in parts else None
    if "2" in parts:
        part2(args)
    clean = part3(args) if "3" in parts else None
    verdict = {None: "not run", True: "yes", False: "NO"}
    print(f"\ntargets met: dedup {verdict[quality]}, contamination {verdict[clean]}")


if __name__ == "__main__":
    main()
