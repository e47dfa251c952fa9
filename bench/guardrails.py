"""Guardrails: precision, recall, F1 and latency of every detector on held-out data; writes bench/guardrails.md.

- Injection / jailbreak: the TEST splits of deepset/prompt-injections and jackhhao/jailbreak-classification
  (the packaged classifier saw only their train splits). Anchor: a plain all-MiniLM-L6-v2 embedding +
  logistic regression (sklearn defaults) trained here on the same train splits.
- Indirect injection: BIPIA test contexts (email, table, code) with a test-split attack inserted at the
  start, middle or end (seeded), against the same contexts without one; false positives on held-out
  ordinary documents (SciFact abstracts and standard-library docstrings of the halves the head was not
  trained on, and this repository's docs).
- PII: span F1 on presidio-synth-pii per supported entity type (a predicted span counts when it has the
  gold type and overlaps a gold span by at least half of the longer of the two); Presidio's own
  recognizers side by side when presidio-analyzer is installed (its spaCy NER model cannot be
  downloaded offline, so only its pattern recognizers run, on a blank spaCy pipeline).
- Benign mentions: false alarms of the injection policies on benign questions that mention "ignore",
  "instructions", "developer mode", "system prompt" or "pretend" (bench/data/benign_mentions.jsonl, test half),
  and on ordinary requests (support, everyday and RAG questions: scripts/guard_data.py:ordinary_requests, test half).
- Toxicity: the Davidson et al. hate/offensive tweets, the test part of a seeded split (it ships none;
  scripts/guard_data.py:davidson_split), P/R/F1 per head and false alarms on the *neither* tweets.
- Chat: false alarms of the injection heads on ordinary chat, the Davidson tweets' test part (none is an
  injection; most are offensive, which is not an attack), each tweet alone and as "Message: <tweet>" (how the
  companion's moderation suite sends chat).
- Secrets: a synthetic, seeded set of keys in the published formats and hard negatives (hashes, UUIDs).
- Latency: the non-model guard chain on a 2 KB input, and each layer on its own.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/guardrails.py [--cache bench/.cache] [--sections injection,benign,toxicity,chat]

``--sections`` reruns some sections and keeps the others in bench/guardrails.md.

Offensive texts of the data sets are never printed: only counts and scores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aiestack.guardrails.heuristics import heuristic_findings, heuristic_score
from aiestack.guardrails.injection import MIN_CHARS, InjectionClassifier, InjectionDetector
from aiestack.guardrails.pii import PIIDetector, Vault
from aiestack.guardrails.secrets import SecretsDetector
from aiestack.guardrails.segments import segments

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from guard_data import bipia_attacks, bipia_contexts, davidson_split, ordinary_documents, ordinary_requests

DATA = Path(os.environ.get("AIESTACK_DATA", "/work/shared/data"))
OUT = Path(__file__).parent / "guardrails.md"


def prf(y: Sequence[int], p: Sequence[int]) -> tuple[float, float, float]:
    tp = sum(1 for a, b in zip(y, p, strict=True) if a and b)
    fp = sum(1 for a, b in zip(y, p, strict=True) if b and not a)
    fn = sum(1 for a, b in zip(y, p, strict=True) if a and not b)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def load(name: str, split: str) -> tuple[list[str], list[int]]:
    rows = [json.loads(line) for line in (DATA / name / f"{split}.jsonl").open(encoding="utf-8")]
    if name == "deepset-prompt-injections":
        return [r["text"] for r in rows], [int(r["label"]) for r in rows]
    return [r["prompt"] for r in rows], [int(r["type"] == "jailbreak") for r in rows]


class Embedder:
    """all-MiniLM-L6-v2 as aiestack runs it; whole splits cached on disk when ``cache`` is given."""

    def __init__(self, cache: Path | None) -> None:
        from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

        self.model = SentenceTransformerEmbeddings("all-MiniLM-L6-v2")
        self.cache = cache

    def many(self, key: str, texts: list[str]) -> np.ndarray:
        path = self.cache / f"{key}.npy" if self.cache else None
        if path is not None and path.is_file():
            return np.load(path)
        vectors = np.asarray(asyncio.run(self.model.embed([t[:2000] for t in texts])), dtype=np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        return vectors

    def one_ms(self, texts: list[str], n: int) -> list[float]:
        """Latency of embedding one text at a time (the way a request is checked), on ``n`` texts."""
        out = []
        for t in texts[:n]:
            start = time.perf_counter()
            asyncio.run(self.model.embed([t[:2000]]))
            out.append((time.perf_counter() - start) * 1000)
        return out


def timed(fn: Callable[[str], float], texts: list[str]) -> tuple[list[float], list[float]]:
    scores, ms = [], []
    for t in texts:
        start = time.perf_counter()
        scores.append(fn(t))
        ms.append((time.perf_counter() - start) * 1000)
    return scores, ms


def injection_section(emb: Embedder, lines: list[str]) -> None:
    from sklearn.linear_model import LogisticRegression

    clf = InjectionClassifier()
    sets = {"deepset": "deepset-prompt-injections", "jailbreak": "jailbreak-classification"}
    lines += [
        "## Prompt injection and jailbreak (TEST splits)",
        "",
        "Ratio = F1 / the anchor's F1 on the same split. Latency per text, one text at a time; rows with the",
        "MiniLM heads include its all-MiniLM-L6-v2 embedding (measured separately, `embed` row); the `lexical`",
        "head and the lexical-only rows use no embedding model (their latency is the heuristics + all heads' n-grams);",
        "the `static` head's rows (the default policy's) add the packaged static embedder's features (the semantic",
        "cache's model2vec model).",
        "",
        "| split | detector | precision | recall | F1 | ratio | p50 ms | p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for short, name in sets.items():
        tr_x, tr_y = load(name, "train")
        te_x, te_y = load(name, "test")
        e_tr, e_te = emb.many(f"{name}_train", tr_x), emb.many(f"{name}_test", te_x)
        embed_ms = emb.one_ms(te_x, 60)
        anchor = LogisticRegression(max_iter=3000).fit(e_tr, tr_y)
        base_pred = [int(p) for p in anchor.predict(e_te)]
        b = prf(te_y, base_pred)
        dot_ms = timed(lambda t: 0.0, te_x)[1]
        rows: list[tuple[str, tuple[float, float, float], list[float]]] = [
            ("anchor: MiniLM + LR", b, [m + statistics.median(embed_ms) for m in dot_ms]),
        ]
        heur, heur_ms = timed(lambda t: heuristic_score(heuristic_findings(t)), te_x)
        rows.append(("heuristics", prf(te_y, [int(s >= 0.5) for s in heur]), heur_ms))
        head_scores: dict[str, list[float]] = {}
        head_ms: list[float] = []
        lex_scores: dict[str, list[float]] = {}
        lex_ms: list[float] = []
        static_ms: list[float] = []
        for i, t in enumerate(te_x):
            start = time.perf_counter()
            s = clf.scores(t, e_te[i])
            head_ms.append((time.perf_counter() - start) * 1000 + statistics.median(embed_ms))
            for h, p in s.items():
                head_scores.setdefault(h, []).append(p if len(t) >= MIN_CHARS.get(h, 0) else 0.0)
            start = time.perf_counter()
            clf.scores(t, None, static=False)
            lex_ms.append((time.perf_counter() - start) * 1000 + heur_ms[i])
            start = time.perf_counter()
            lexical = clf.scores(t, None)
            static_ms.append((time.perf_counter() - start) * 1000 + heur_ms[i])
            for h, p in lexical.items():
                lex_scores.setdefault(h, []).append(p if len(t) >= MIN_CHARS.get(h, 0) else 0.0)

        def layered(heads: Sequence[str], scores: dict[str, list[float]], heur: list[float] = heur) -> list[int]:
            return [int(max([heur[i], *(scores[h][i] for h in heads)]) >= 0.5) for i in range(len(heur))]

        own = "injection" if short == "deepset" else "jailbreak"
        rows += [
            (f"classifier head `{own}` alone", prf(te_y, [int(s >= 0.5) for s in head_scores[own]]), head_ms),
            (f"layered: heuristics + `{own}` head", prf(te_y, layered([own], head_scores)), head_ms),
            ("**layered, default policy (heads = static: n-grams + the static embedder, chat-trained)**",
             prf(te_y, layered(["static"], lex_scores)), static_ms),
            ("layered, heads = lexical (the default before that: no embedding model)", prf(te_y, layered(["lexical"], lex_scores)), lex_ms),
            ("layered, heads = combined (MiniLM, the default before `lexical`)", prf(te_y, layered(["combined"], head_scores)), head_ms),
            ("layered, heads = jailbreak (the default before `combined`)", prf(te_y, layered(["jailbreak"], head_scores)), head_ms),
            ("layered, heads = combined + injection", prf(te_y, layered(["combined", "injection"], head_scores)), head_ms),
            ("layered, heads = injection + jailbreak", prf(te_y, layered(["injection", "jailbreak"], head_scores)), head_ms),
            (f"layered lexical-only (no embedding model), `{own}`", prf(te_y, layered([own], lex_scores)), lex_ms),
            ("layered lexical-only (no embedding model), `combined`", prf(te_y, layered(["combined"], lex_scores)), lex_ms),
        ]
        for label, (p, r, f), ms in rows:
            lines.append(
                f"| {short} ({len(te_x)}) | {label} | {p:.3f} | {r:.3f} | {f:.3f} | {f / b[2]:.3f} | {pct(ms, 50):.2f} | {pct(ms, 95):.2f} |"
            )
        lines.append(f"| {short} | embed (all-MiniLM-L6-v2, one text) | | | | | {pct(embed_ms, 50):.2f} | {pct(embed_ms, 95):.2f} |")
    lines.append("")


def benign_section(emb: Embedder, lines: list[str]) -> None:
    """False alarms on benign questions that mention the words attacks use (bench/data/benign_mentions.jsonl,
    test half) and on ordinary requests (scripts/guard_data.py:ordinary_requests, test half)."""
    rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "benign_mentions.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == "test"]
    texts = [r["text"] for r in rows]
    vectors = emb.many("benign_mentions_test", texts)
    ordinary = ordinary_requests("test")
    o_vectors = emb.many("ordinary_requests_test", ordinary)
    clf = InjectionClassifier()
    policies = {
        "**default policy (heads = static: n-grams + the static embedder, chat-trained)**": ["static"],
        "heads = lexical (the default before that: no embedding model)": ["lexical"],
        "heads = combined (MiniLM, the default before `lexical`)": ["combined"],
        "heads = jailbreak (the default before `combined`)": ["jailbreak"],
        "heads = combined + injection": ["combined", "injection"],
        "heads = injection + jailbreak": ["injection", "jailbreak"],
        "lexical-only (no embedding model), combined": None,
    }
    words = sorted({r["mentions"] for r in rows})
    lines += [
        "## False alarms on benign questions that mention attack words, and on ordinary requests",
        "",
        f"{len(rows)} benign questions (the `test` half of bench/data/benign_mentions.jsonl, written for issue #17; the",
        "`train` half, other questions, is the `static`, `lexical` and `combined` heads' hard negatives), 50 per word, and",
        f"{len(ordinary)} ordinary requests (the `test` halves of bench/data/routing.jsonl, cache_pairs.jsonl and",
        "ordinary_requests.jsonl, less any text also in a `train` half: support questions, everyday questions, RAG and",
        "document requests; the `train` halves are the `static` and `lexical` heads' negatives). Heuristics included.",
        "Target for the default policy: at most 2% flagged.",
        "",
        "| policy | " + " | ".join(f"'{w}'" for w in words) + " | all | rate | ordinary requests | rate |",
        "|---|" + "---:|" * (len(words) + 4),
    ]

    def hit(text: str, v: np.ndarray, heads: list[str] | None) -> bool:
        scores = clf.scores(text, None if heads is None else v)
        counted = [scores[h] for h in (heads or ["combined"]) if len(text) >= MIN_CHARS.get(h, 0)]
        return max([heuristic_score(heuristic_findings(text)), *counted]) >= 0.5

    for label, heads in policies.items():
        flagged: Counter[str] = Counter()
        for r, v in zip(rows, vectors, strict=True):
            if hit(r["text"], v, heads):
                flagged[r["mentions"]] += 1
        total = sum(flagged.values())
        o_total = sum(hit(t, v, heads) for t, v in zip(ordinary, o_vectors, strict=True))
        cells = " | ".join(str(flagged[w]) for w in words)
        lines.append(
            f"| {label} | {cells} | {total}/{len(rows)} | {total / len(rows):.3f} | {o_total}/{len(ordinary)} | {o_total / len(ordinary):.3f} |"
        )
    lines.append("")


def toxicity_section(lines: list[str]) -> None:
    """The toxicity guard on the test part of the seeded Davidson split (scripts/guard_data.py)."""
    from aiestack.guardrails.toxicity import ToxicityClassifier, ToxicityDetector

    texts, classes = davidson_split(DATA, "test")
    clf = ToxicityClassifier()
    targets = {"toxic": [int(c <= 1) for c in classes], "hate": [int(c == 0) for c in classes]}
    neither = [i for i, c in enumerate(classes) if c == 2]
    lines += [
        "## Toxicity (Davidson et al. 2017, test part of the seeded split)",
        "",
        f"{len(texts)} tweets (hate speech {classes.count(0)}, offensive {classes.count(1)}, neither {classes.count(2)}):",
        "the test part of `scripts/guard_data.py:davidson_split` (CRC-32 of the seeded, normalised text; the",
        "classifier saw only the train part). `toxic` = hate speech or offensive language. \"whole tweet\" scores",
        "the tweet at once; \"detector\" is the guard as it runs, one sentence at a time (flagged if any is).",
        "False alarms: the share of the *neither* tweets flagged. Latency per tweet, one at a time.",
        "",
        "| head | how | precision | recall | F1 | false alarms on neither | p50 ms | p95 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for head, y in targets.items():
        whole, whole_ms = timed(lambda t, h=head: clf.scores(t)[h], texts)
        detector = ToxicityDetector(clf, labels=[head])
        found, det_ms = timed(lambda t, d=detector: float(bool(d.detect(t))), texts)
        for how, scores, ms in (("whole tweet", whole, whole_ms), ("**detector (per sentence)**", found, det_ms)):
            pred = [int(x >= 0.5) for x in scores]
            p, r, f = prf(y, pred)
            fa = sum(pred[i] for i in neither) / len(neither)
            lines.append(f"| {head} | {how} | {p:.3f} | {r:.3f} | {f:.3f} | {fa:.3f} | {pct(ms, 50):.3f} | {pct(ms, 95):.3f} |")
    lines += [
        "",
        "The labels carry a documented racial bias (Davidson et al. 2019, arXiv:1905.12516): African-American English",
        "is labelled offensive more often, and a model trained on them learns it. The guard is off by default.",
        "",
    ]


def _insert(context: str, attack: str, where: str) -> str:
    if where == "start":
        return f"{attack}\n{context}"
    if where == "end":
        return f"{context}\n{attack}"
    mid = len(context) // 2
    return f"{context[:mid]}\n{attack}\n{context[mid:]}"


def _repo_doc_chunks() -> list[tuple[str, str]]:
    """(file name, piece): this repository's own docs in ~1,200-character pieces, full of imperatives."""
    chunks = []
    for path in sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        chunks += [(path.name, text[i : i + 1200]) for i in range(0, len(text), 1200)]
    return chunks


def chat_section(lines: list[str]) -> None:
    """Injection false alarms on chat: the Davidson test part, per head, as the guard runs it (heuristics included)."""
    import html

    texts, classes = davidson_split(DATA, "test")
    texts = [html.unescape(t) for t in texts]
    clf = InjectionClassifier()
    n = Counter(classes)
    lines += [
        "## False alarms of the injection heads on ordinary chat (Davidson tweets, test part)",
        "",
        f"{len(texts)} tweets (hate speech {n[0]}, offensive {n[1]}, neither {n[2]}), none of them an injection:",
        "the share the guard blocks (score >= 0.5, heuristics included) with each head, each tweet alone and as",
        '"Message: <tweet>", the way examples/companion\'s moderation suite sends chat. Neither head saw these tweets;',
        "the `static` head learned 3,000 other tweets of the train part as chat (scripts/train_static_injection.py).",
        "",
        "| head | input | all | hate speech | offensive | neither |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for head in ("static", "lexical"):
        detector = InjectionDetector(classifier=clf, heads=(head,))
        for prefix in ("", "Message: "):
            results = asyncio.run(detector.score_many([prefix + t for t in texts]))
            hit = Counter(c for c, r in zip(classes, results, strict=True) if r.score >= detector.threshold)
            shares = " | ".join(f"{hit[c] / n[c]:.1%}" for c in (0, 1, 2))
            label = "**static (default)**" if head == "static" else head
            lines.append(f"| {label} | {'Message: ' + chr(8230) if prefix else 'tweet'} | {sum(hit.values()) / len(texts):.1%} | {shares} |")
    lines.append("")


def bipia_section(emb: Embedder, lines: list[str]) -> None:
    clf = InjectionClassifier()
    rng = random.Random(0)
    attacks = {kind: [(c, a) for c, a in bipia_attacks(DATA, "test") if c.startswith(kind)] for kind in ("text", "code")}
    lines += [
        "## Indirect injection in retrieved context (BIPIA TEST contexts and TEST attacks)",
        "",
        "Each context once clean and once with a test attack inserted at a random position (start, middle or",
        "end; seeded). The test attacks are of other categories than the train attacks the `indirect` head saw.",
        "Detector: the context guard at its threshold (0.5) on the whole context. `indirect` is the default: the",
        "heuristics plus the lexical `indirect` head on each sentence or line (no embedding model).",
        "",
        "| task | detector | cases | precision | recall | F1 | false-positive rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    detectors: dict[str, InjectionDetector] = {
        "heuristics only": InjectionDetector(),
        "**heuristics + `indirect` (default)**": InjectionDetector(classifier=clf, heads=(), indirect=True),
        "default + `jailbreak` head on the whole chunk": InjectionDetector(classifier=clf, heads=("jailbreak",), indirect=True),
    }
    per_category: dict[str, list[int]] = {}
    latencies: list[float] = []
    for task, kind in (("email", "text"), ("table", "text"), ("code", "code")):
        texts, labels, cats = [], [], []
        for ctx in bipia_contexts(DATA, task, "test"):
            cat, attack = rng.choice(attacks[kind])
            texts += [ctx, _insert(ctx, attack, rng.choice(("start", "middle", "end")))]
            labels += [0, 1]
            cats += ["", cat]
        vectors = emb.many(f"bipia_{task}_test_joined_seed0", texts)
        for name, det in detectors.items():
            pred = []
            for t, v in zip(texts, vectors, strict=True):
                started = time.perf_counter()
                result = asyncio.run(det._one(t, v if det.heads else None))
                if name.startswith("**"):
                    latencies.append((time.perf_counter() - started) * 1000)
                pred.append(int(result.score >= 0.5))
            if name.startswith("**"):
                for c, y, q in zip(cats, labels, pred, strict=True):
                    if y:
                        per_category.setdefault(c, []).append(q)
            p, r, f = prf(labels, pred)
            fpr = sum(1 for y, q in zip(labels, pred, strict=True) if q and not y) / labels.count(0)
            lines.append(f"| {task} | {name} | {len(texts)} | {p:.3f} | {r:.3f} | {f:.3f} | {fpr:.3f} |")
    default = detectors["**heuristics + `indirect` (default)**"]
    lines += [
        "",
        f"Latency of the default check per context (email, table and code, clean and attacked): p50 {pct(latencies, 50):.2f} ms,"
        f" p95 {pct(latencies, 95):.2f} ms.",
        "",
        "False positives of the default check on ordinary documents it never saw (whole documents, the held-out halves):",
        "",
        "| documents | count | flagged | false-positive rate |",
        "|---|---:|---:|---:|",
    ]
    repo = "this repository's docs/*.md (1,200-char pieces)"
    named = _repo_doc_chunks()
    held_out = [*ordinary_documents(DATA, half="test"), *((repo, d) for _, d in named)]
    for src in dict.fromkeys(s for s, _ in held_out):
        docs = [d for s, d in held_out if s == src]
        flagged = sum(1 for d in docs if asyncio.run(default._one(d, None)).score >= 0.5)
        lines.append(f"| {src} | {len(docs)} | {flagged} | {flagged / len(docs):.3f} |")
    where = Counter(name for name, d in named if asyncio.run(default._one(d, None)).score >= 0.5)
    lines += ["", "The flagged pieces of the docs: " + ", ".join(f"{n} ({c})" for n, c in sorted(where.items()))
              + " (pages that quote attacks, e.g. the injection rules and their examples)."]
    lines += ["", "Recall of the default check per test attack category (attacked contexts of that category caught / inserted):", ""]
    lines.append(
        "; ".join(f"{c.split(':', 1)[1]} {sum(v)}/{len(v)}" for c, v in sorted(per_category.items()))
    )
    lines.append("")


GOLD_OF = {"LOCATION": "STREET_ADDRESS"}


def span_scores(
    samples: list[dict], detect: Callable[[str], list[tuple[str, int, int]]], types: Sequence[str]
) -> tuple[dict[str, tuple[float, float, float, int]], list[float]]:
    tp: dict[str, int] = dict.fromkeys(types, 0)
    fp, fn = dict(tp), dict(tp)
    ms = []
    for s in samples:
        text = s["full_text"]
        gold = [(g["entity_type"], g["start_position"], g["end_position"]) for g in s["spans"] if g["entity_type"] in types]
        start = time.perf_counter()
        pred = [p for p in detect(text) if p[0] in types]
        ms.append((time.perf_counter() - start) * 1000)
        used: set[int] = set()
        for kind, a, b in pred:
            match = next(
                (i for i, (gk, ga, gb) in enumerate(gold)
                 if i not in used and gk == kind and min(b, gb) - max(a, ga) >= 0.5 * max(b - a, gb - ga)),
                None,
            )
            if match is None:
                fp[kind] += 1
            else:
                used.add(match)
                tp[kind] += 1
        for i, (gk, _, _) in enumerate(gold):
            if i not in used:
                fn[gk] += 1
    out = {}
    for k in types:
        p = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0
        r = tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else 0.0
        out[k] = (p, r, 2 * p * r / (p + r) if p + r else 0.0, tp[k] + fn[k])
    tps, fps, fns = sum(tp.values()), sum(fp.values()), sum(fn.values())
    p = tps / (tps + fps) if tps + fps else 0.0
    r = tps / (tps + fns) if tps + fns else 0.0
    out["micro"] = (p, r, 2 * p * r / (p + r) if p + r else 0.0, tps + fns)
    return out, ms


def presidio_detect() -> tuple[Callable[[str], list[tuple[str, int, int]]] | None, str]:
    try:
        import tempfile

        import spacy
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as exc:
        return None, f"presidio-analyzer is not installed ({exc.name})"
    folder = Path(tempfile.mkdtemp()) / "blank_en"
    spacy.blank("en").to_disk(folder)
    provider = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": str(folder)}]})
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])

    def detect(text: str) -> list[tuple[str, int, int]]:
        return [(r.entity_type, r.start, r.end) for r in engine.analyze(text, language="en") if r.score >= 0.5]

    return detect, "presidio-analyzer " + __import__("presidio_analyzer").__version__ if hasattr(__import__("presidio_analyzer"), "__version__") else "presidio-analyzer"


def pii_section(lines: list[str]) -> None:
    samples = json.load((DATA / "presidio-synth-pii" / "synth_dataset_v2.json").open(encoding="utf-8"))
    validated = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]
    detector = PIIDetector()

    def ours(text: str) -> list[tuple[str, int, int]]:
        return [(GOLD_OF.get(f.kind, f.kind), f.start or 0, f.end or 0) for f in detector.detect(text)]

    mine, mine_ms = span_scores(samples, ours, validated)
    rules, _ = span_scores(samples, ours, ["PERSON", "STREET_ADDRESS"])
    presidio, note = presidio_detect()
    theirs: dict[str, tuple[float, float, float, int]] = {}
    theirs_ms: list[float] = []
    if presidio is not None:
        try:
            theirs, theirs_ms = span_scores(samples, presidio, validated)
        except Exception as exc:  # e.g. a recognizer that needs the network
            note, theirs = f"Presidio failed offline: {type(exc).__name__}: {exc}", {}
    lines += [
        "## PII (presidio-synth-pii, 1,500 sentences; span F1)",
        "",
        f"Presidio: {note}; its NER model (en_core_web_lg) is not available offline, so it runs with its"
        " pattern recognizers on a blank spaCy pipeline (PERSON/LOCATION need the NER model and are not compared).",
        "",
        "| entity | gold spans | aiestack P | R | F1 | Presidio P | R | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in [*validated, "micro"]:
        p, r, f, n = mine[k]
        other = theirs.get(k)
        right = f"{other[0]:.3f} | {other[1]:.3f} | {other[2]:.3f}" if other else "– | – | –"
        name = "**micro (supported, validated types)**" if k == "micro" else k
        lines.append(f"| {name} | {n} | {p:.3f} | {r:.3f} | {f:.3f} | {right} |")
    # The phone cues (words such as "Phone:" or "call me at") were written after reading the phone
    # numbers of rows 0-519; rows 520 on were not read.
    unread, _ = span_scores(samples[520:], ours, ["PHONE_NUMBER"])
    p, r, f, n = unread["PHONE_NUMBER"]
    lines.append(f"| PHONE_NUMBER, rows 520+ only (not read while writing the phone cues) | {n} | {p:.3f} | {r:.3f} | {f:.3f} | – | – | – |")
    for k in ("PERSON", "STREET_ADDRESS"):
        p, r, f, n = rules[k]
        lines.append(f"| {k} (light rules, best effort) | {n} | {p:.3f} | {r:.3f} | {f:.3f} | – | – | – |")
    lines.append("")
    lines.append(
        f"Latency per sentence: aiestack p50 {pct(mine_ms, 50):.3f} ms, p95 {pct(mine_ms, 95):.3f} ms"
        + (f"; Presidio p50 {pct(theirs_ms, 50):.3f} ms, p95 {pct(theirs_ms, 95):.3f} ms (ratio {pct(theirs_ms, 50) / max(pct(mine_ms, 50), 1e-9):.1f}x)." if theirs_ms else ".")
    )
    lines.append("")


def secrets_section(lines: list[str]) -> None:
    rng = random.Random(0)
    alnum = string.ascii_letters + string.digits

    def r(n: int, alphabet: str = alnum) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    makers = {
        "OPENAI_KEY": lambda: "sk-proj-" + r(48),
        "ANTHROPIC_KEY": lambda: "sk-ant-api03-" + r(60),
        "AWS_ACCESS_KEY_ID": lambda: "AKIA" + r(16, string.ascii_uppercase + string.digits),
        "GITHUB_TOKEN": lambda: "ghp_" + r(36),
        "SLACK_TOKEN": lambda: "xoxb-" + r(12, string.digits) + "-" + r(24),
        "STRIPE_KEY": lambda: "sk_" + "live_" + r(24),
        "GOOGLE_API_KEY": lambda: "AIza" + r(35),
        "JWT": lambda: "eyJ" + r(20) + ".eyJ" + r(30) + "." + r(43),
        "GENERIC_SECRET": lambda: 'api_key = "' + r(24) + '"',
    }
    templates = ["Here is my key {} can you check it?", "export TOKEN_X={}\n", "config:\n  value: {}\n", "{}"]
    negatives = [
        lambda: f"commit {r(40, '0123456789abcdef')} fixed the bug",
        lambda: f"run id {r(8, '0123456789abcdef')}-{r(4, '0123456789abcdef')}-{r(4, '0123456789abcdef')}-{r(4, '0123456789abcdef')}-{r(12, '0123456789abcdef')}",
        lambda: f"the sha256 is {r(64, '0123456789abcdef')}",
        lambda: "The password policy requires twelve characters and a symbol.",
        lambda: f"image data {r(60, alnum + '+/')}==",
        lambda: "Ask the skeptic: sk-eptical thinking is a skill-building exercise.",
    ]
    det = SecretsDetector()
    y, p, ms = [], [], []
    for _ in range(50):
        for make in makers.values():
            text = rng.choice(templates).format(make())
            start = time.perf_counter()
            p.append(int(bool(det.detect(text))))
            ms.append((time.perf_counter() - start) * 1000)
            y.append(1)
        for make_neg in negatives:
            text = make_neg()
            p.append(int(bool(det.detect(text))))
            y.append(0)
    pr, rc, f = prf(y, p)
    lines += [
        "## Secrets (synthetic, seeded: 9 key formats × 50 and 6 kinds of hard negatives × 50)",
        "",
        "| detector | cases | precision | recall | F1 | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| secrets (formats + context-named entropy) | {len(y)} | {pr:.3f} | {rc:.3f} | {f:.3f} | {pct(ms, 50):.3f} | {pct(ms, 95):.3f} |",
        "",
    ]


def chain_section(lines: list[str]) -> None:
    base = (
        "Hello team, please update the ticket for customer Jane Roe (jane.roe@example.com, +1 415-555-2671). "
        "Her card 4111 1111 1111 1111 was charged twice; refund to IBAN DE89 3704 0044 0532 0130 00. "
        "The server at 10.20.30.40 logged the error. Our deploy key is ghp_" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4Q5r6S7t8 "
        "which should not be here. Could you also summarise the meeting notes below and list next steps? "
    )
    text = (base * (2048 // len(base) + 1))[:2048]
    pii, secrets = PIIDetector(), SecretsDetector()
    clf = InjectionClassifier()

    def input_chain() -> str:
        vault = Vault()
        redacted = vault.redact(text, secrets.detect(text))
        redacted = vault.redact(redacted, pii.detect(redacted))
        heuristic_score(heuristic_findings(redacted))
        pii.detect(redacted)  # the output PII-leak check on an answer of the same size
        return vault.restore(redacted)

    def with_lexical() -> None:
        input_chain()
        clf.scores(text, None, static=False)

    def with_static() -> None:
        input_chain()
        clf.scores(text, None)

    rows = []
    for label, fn in (
        ("heuristics only", lambda: heuristic_score(heuristic_findings(text))),
        ("secrets detect", lambda: secrets.detect(text)),
        ("PII detect", lambda: pii.detect(text)),
        ("**non-model chain: secrets + PII redact, heuristics, output PII, restore**", input_chain),
        ("chain + lexical classifier heads (the `lexical` head's policy)", with_lexical),
        ("**chain + lexical heads + the `static` head (the default policy: static embedder features)**", with_static),
        ("context check of one 2 KB chunk: heuristics + `indirect` head per sentence", lambda: (
            heuristic_score(heuristic_findings(text)), clf.indirect_scores([seg.text for seg in segments(text)]))),
    ):
        for _ in range(5):
            fn()
        ms = []
        for _ in range(200):
            start = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - start) * 1000)
        rows.append((label, ms))
    anchor = pct(rows[3][1], 50)
    lines += [
        "## Guard chain latency on a 2 KB input (200 runs; ratio = p50 / the non-model chain's p50)",
        "",
        "| chain | p50 ms | p95 ms | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {pct(ms, 50):.3f} | {pct(ms, 95):.3f} | {pct(ms, 50) / anchor:.2f} |" for label, ms in rows),
        "",
        "The model layers add the embedding (see the `embed` rows above) and, when configured, a judge model call.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="keep split embeddings here between runs")
    parser.add_argument("--sections", default="injection,benign,bipia,toxicity,chat,pii,secrets,chain")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    lines = [
        "# Guardrails benchmark",
        "",
        "Written by `HF_HUB_OFFLINE=1 .venv/bin/python bench/guardrails.py` (see its docstring for the method).",
        f"Machine: {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} at the start (a shared machine:"
        f" latencies vary with the load); Python {sys.version.split()[0]}.",
        "",
    ]
    # The latency sections run first: once torch has run, its worker threads slow other Python code in
    # the same process (the chain's p50 triples), which a gateway with a separate embedding worker does not see.
    if "chain" in sections:
        chain_section(lines)
    if "secrets" in sections:
        secrets_section(lines)
    if "pii" in sections:
        pii_section(lines)
    emb = Embedder(args.cache) if sections & {"injection", "benign", "bipia"} else None
    if "injection" in sections and emb is not None:
        injection_section(emb, lines)
    if "benign" in sections and emb is not None:
        benign_section(emb, lines)
    if "bipia" in sections and emb is not None:
        bipia_section(emb, lines)
    if "toxicity" in sections:
        toxicity_section(lines)
    if "chat" in sections:
        chat_section(lines)
    OUT.write_text(merge_sections(OUT.read_text(encoding="utf-8") if OUT.is_file() else "", lines), encoding="utf-8")
    print("\n".join(lines))


def merge_sections(old: str, lines: list[str]) -> str:
    """The report with the ``## `` sections just measured replaced (or appended) and the others kept,
    so ``--sections`` reruns one part without losing the rest; the header is always the new one."""

    def split(text: str) -> tuple[str, dict[str, str]]:
        head, *parts = text.split("\n## ")
        return head, {p.split("\n", 1)[0]: "## " + p.rstrip("\n") + "\n" for p in parts}

    _, before = split(old)
    head, now = split("\n".join(lines))
    merged = {**before, **now}
    order = list(before) + [t for t in now if t not in before]
    return head.rstrip("\n") + "\n\n" + "\n".join(merged[t] for t in order)


if __name__ == "__main__":
    main()
