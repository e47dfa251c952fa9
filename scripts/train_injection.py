"""Train the packaged injection classifier (src/aiestack/guardrails/data/injection.npz), reproducibly.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_injection.py [--data /work/shared/data] [--check]

Uses ONLY the *train* splits of deepset/prompt-injections (head ``injection``) and
jackhhao/jailbreak-classification (head ``jailbreak``). Features: the all-MiniLM-L6-v2 embedding of
the text (as aiestack computes it at run time) concatenated with hashed word/character n-grams
(:func:`aiestack.guardrails._features.hashed_ngrams`). Each head is an L2-regularised logistic
regression whose strength ``C`` and decision threshold are chosen by stratified 5-fold cross-validation
on the train split (fixed seeds); the threshold is folded into the intercept, so 0.5 means it. Lexical-only heads (n-grams without the embedding) are trained the same way, for
stacks without the embedding model. ``--check`` prints the cross-validated F1 and writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from aiestack.guardrails._features import hashed_ngrams

OUT = Path(__file__).resolve().parents[1] / "src" / "aiestack" / "guardrails" / "data" / "injection.npz"
HASH_DIM = 1 << 14
CS = (4.0, 16.0, 64.0)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.3, 0.71, 0.05))
SEED = 0


def load(data: Path, name: str, split: str) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in (data / name / f"{split}.jsonl").open(encoding="utf-8")]
    if name == "deepset-prompt-injections":
        return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])
    return [r["prompt"] for r in rows], np.array([int(r["type"] == "jailbreak") for r in rows])


def embed(texts: list[str], cache: Path | None = None) -> np.ndarray:
    if cache is not None and cache.is_file():
        return np.load(cache)
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    model = SentenceTransformerEmbeddings("all-MiniLM-L6-v2")

    async def run() -> list[list[float]]:
        try:
            return await model.embed([t[:2000] for t in texts])
        finally:
            await model.aclose()

    vectors = np.asarray(asyncio.run(run()), dtype=np.float32)
    if cache is not None:
        np.save(cache, vectors)
    return vectors


def features(texts: list[str], emb: np.ndarray | None) -> sp.csr_matrix:
    lex = sp.csr_matrix(np.stack([hashed_ngrams(t, HASH_DIM) for t in texts]))
    return lex if emb is None else sp.hstack([sp.csr_matrix(emb), lex]).tocsr()


def fit(x: sp.csr_matrix, y: np.ndarray) -> tuple[LogisticRegression, float, float, float]:
    """The model with the best cross-validated F1 over ``CS`` and decision thresholds, refit on all of ``x``.

    Returns (model, C, threshold, cross-validated F1). The threshold is folded into the intercept by
    the caller, so that 0.5 on the shipped model means the cross-validated best threshold.
    """
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    best_c, best_t, best_f1 = CS[0], 0.5, -1.0
    for c in CS:
        probs = np.zeros(len(y))
        for tr, va in folds.split(x, y):
            m = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", solver="liblinear", random_state=SEED)
            m.fit(x[tr], y[tr])
            probs[va] = m.predict_proba(x[va])[:, 1]
        for t in THRESHOLDS:
            f1 = f1_score(y, probs >= t)
            if f1 > best_f1 + 1e-9:
                best_c, best_t, best_f1 = c, t, f1
    model = LogisticRegression(C=best_c, max_iter=3000, class_weight="balanced", solver="liblinear", random_state=SEED).fit(x, y)
    return model, best_c, best_t, best_f1


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("AIESTACK_DATA", "/work/shared/data")))
    parser.add_argument("--check", action="store_true", help="print cross-validated F1 only")
    parser.add_argument("--cache", type=Path, default=None, help="a folder to keep the train embeddings in between runs")
    args = parser.parse_args()
    heads = {"injection": "deepset-prompt-injections", "jailbreak": "jailbreak-classification"}
    w_emb, w_hash, bias, lex_w, lex_b = [], [], [], [], []
    dim = 0
    for head, name in heads.items():
        texts, y = load(args.data, name, "train")
        emb = embed(texts, args.cache / f"{name}_train.npy" if args.cache else None)
        dim = emb.shape[1]
        full, c, t, f1 = fit(features(texts, emb), y)
        lex, lc, lt, lf1 = fit(features(texts, None), y)
        print(f"{head:10s} train={len(texts)}  full: C={c:g} t={t:.2f} cv-F1={f1:.3f}  lexical: C={lc:g} t={lt:.2f} cv-F1={lf1:.3f}")
        coef = full.coef_[0]
        w_emb.append(coef[:dim])
        w_hash.append(coef[dim:])
        bias.append(full.intercept_[0] - _logit(t))
        lex_w.append(lex.coef_[0])
        lex_b.append(lex.intercept_[0] - _logit(lt))
    if args.check:
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        heads=np.array(list(heads)),
        embedding_model=np.array("all-MiniLM-L6-v2"),
        hash_dim=np.array(HASH_DIM),
        w_emb=np.asarray(w_emb, dtype=np.float16),
        w_hash=np.asarray(w_hash, dtype=np.float16),
        bias=np.asarray(bias, dtype=np.float32),
        lex_w_hash=np.asarray(lex_w, dtype=np.float16),
        lex_bias=np.asarray(lex_b, dtype=np.float32),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
