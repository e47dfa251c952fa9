"""One reading of the TEST data for a declared injection-head candidate (issue #17's protocol): the default
policy's injection detector, built the way the stack builds it (``build_guard_table`` defaults, heuristics
included, the embedding model never asked), on deepset TEST, jailbreak TEST, the benign mentions' ``test``
half, the ordinary requests' ``test`` halves, and the Davidson ``test`` part as chat (alone and as
"Message: <tweet>"), beside the ``lexical`` head on the same chat. Counts and rates only, no text.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/injection_test_read.py

Run it once per declared candidate, after the declaration is committed (see docs/guardrails.md).
"""

from __future__ import annotations

import html
import json
import os
import sys
from collections import Counter
from pathlib import Path

from aiestack.guardrails import InjectionClassifier, InjectionDetector, build_guard_table
from aiestack.guardrails.factory import classifier_embed

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AIESTACK_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "scripts"))
from guard_data import CHAT_PREFIX, davidson_split, flagged, ordinary_requests  # noqa: E402


def split(name: str) -> tuple[list[str], list[int]]:
    rows = [json.loads(line) for line in (DATA / name / "test.jsonl").open(encoding="utf-8")]
    if name == "deepset-prompt-injections":
        return [r["text"] for r in rows], [int(r["label"]) for r in rows]
    return [r["prompt"] for r in rows], [int(r["type"] == "jailbreak") for r in rows]


def main() -> None:
    def no_model() -> object:
        raise AssertionError("the default injection guard asked for the embedding model")

    clf = InjectionClassifier()
    detector = build_guard_table({}, {}, classifier=clf, embed=classifier_embed(no_model, 384)).default.injection  # type: ignore[arg-type]
    print(f"default policy heads: {sorted(detector.heads or [])}")
    for name in ("deepset-prompt-injections", "jailbreak-classification"):
        x, y = split(name)
        pred = flagged(detector, x)
        tp = sum(1 for t, p in zip(y, pred, strict=True) if t and p)
        fp = sum(1 for t, p in zip(y, pred, strict=True) if p and not t)
        fn = sum(1 for t, p in zip(y, pred, strict=True) if t and not p)
        p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        print(f"{name} TEST ({len(x)}, {sum(y)} positive): P {p:.3f} R {r:.3f} F1 {2 * tp / (2 * tp + fp + fn):.3f} (TP {tp}, FP {fp}, FN {fn})")
    rows = [json.loads(line) for line in (ROOT / "bench" / "data" / "benign_mentions.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["split"] == "test"]
    hits = flagged(detector, [r["text"] for r in rows])
    per_word = Counter(r["mentions"] for r, h in zip(rows, hits, strict=True) if h)
    print(f"benign mentions test: {sum(hits)}/{len(rows)} flagged {dict(sorted(per_word.items()))}")
    ordinary = ordinary_requests("test")
    print(f"ordinary requests test: {sum(flagged(detector, ordinary))}/{len(ordinary)} flagged")
    tweets, classes = davidson_split(DATA, "test")
    tweets = [html.unescape(t) for t in tweets]
    n = Counter(classes)
    lexical = InjectionDetector(classifier=clf, heads=("lexical",))
    for label, det in (("default policy", detector), ("lexical head", lexical)):
        for prefix in ("", CHAT_PREFIX):
            hit = Counter(c for c, h in zip(classes, flagged(det, [prefix + t for t in tweets]), strict=True) if h)
            shares = ", ".join(f"{k} {hit[c]}/{n[c]}" for c, k in ((0, "hate"), (1, "offensive"), (2, "neither")))
            print(f"Davidson test chat, {label}, {'Message: ...' if prefix else 'tweet'}: {sum(hit.values())}/{len(tweets)} "
                  f"= {sum(hit.values()) / len(tweets):.1%} ({shares})")


if __name__ == "__main__":
    main()
