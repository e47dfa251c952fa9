"""Train the packaged toxicity classifier (src/aiestack/guardrails/data/toxicity.npz), reproducibly.

    .venv/bin/python scripts/train_toxicity.py [--data /work/shared/data] [--check]

Data: Davidson et al. (2017), hate speech and offensive language in tweets, which ships without a
split; ``scripts/guard_data.py:davidson_split`` defines a seeded, grouped one (about 80% train, 20%
test, identical tweets on one side). Only the *train* part is read here; bench/guardrails.py measures
on the test part.

Features: hashed word and character n-grams of the normalised text
(:func:`aiestack.guardrails.toxicity.normalise`, :func:`aiestack.guardrails.features.hashed_ngrams_sparse`),
the run time's own functions. Heads: ``toxic`` (classes 0 and 1 against 2) and ``hate`` (class 0
against the rest). Each is an L2 logistic regression whose ``C`` and decision threshold are chosen by
stratified 5-fold cross-validation on the train part (fixed seeds), by F1; the threshold is folded
into the intercept, so 0.5 on the shipped model means it. ``--check`` prints the cross-validated
figures and writes nothing. The texts are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.model_selection import StratifiedKFold

from aiestack.guardrails.features import hashed_ngrams_sparse
from aiestack.guardrails.toxicity import LABELS, normalise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_data import davidson_split

OUT = Path(__file__).resolve().parents[1] / "src" / "aiestack" / "guardrails" / "data" / "toxicity.npz"
HASH_DIM = 1 << 15
CS = (0.25, 1.0, 4.0, 16.0)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.2, 0.91, 0.05))
SEED = 0


def _model(c: float, balanced: bool) -> LogisticRegression:
    return LogisticRegression(
        C=c, max_iter=3000, class_weight="balanced" if balanced else None, solver="liblinear", random_state=SEED
    )


def fit(x: sp.csr_matrix, y: np.ndarray, balanced: bool) -> tuple[LogisticRegression, float, float, tuple[float, float, float]]:
    """The best model by cross-validated F1 over ``CS`` and thresholds, refit on all of ``x``:
    (model, C, threshold, cross-validated (precision, recall, F1))."""
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED).split(x, y))
    best: tuple[float, float, float, np.ndarray] | None = None  # (f1, C, t, probs)
    for c in CS:
        probs = np.zeros(len(y))
        for tr, va in folds:
            probs[va] = _model(c, balanced).fit(x[tr], y[tr]).predict_proba(x[va])[:, 1]
        for t in THRESHOLDS:
            f1 = float(f1_score(y, probs >= t))
            if best is None or f1 > best[0] + 1e-9:
                best = (f1, c, t, probs)
    assert best is not None
    f1, c, t, probs = best
    pred = probs >= t
    figures = (float(precision_score(y, pred)), float(recall_score(y, pred)), f1)
    return _model(c, balanced).fit(x, y), c, t, figures


def features(texts: list[str]) -> sp.csr_matrix:
    """The run time's features (:meth:`ToxicityClassifier.scores`), as one sparse matrix."""
    rows = [hashed_ngrams_sparse(normalise(t), HASH_DIM) for t in texts]
    indptr = np.cumsum([0, *(len(i) for i, _ in rows)])
    indices = np.concatenate([i for i, _ in rows])
    data = np.concatenate([v for _, v in rows])
    return sp.csr_matrix((data, indices, indptr), shape=(len(texts), HASH_DIM))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("AIESTACK_DATA", "/work/shared/data")))
    parser.add_argument("--check", action="store_true", help="print cross-validated figures only")
    args = parser.parse_args()
    texts, classes = davidson_split(args.data, "train")
    x = features(texts)
    cls = np.asarray(classes)
    targets = {"toxic": (cls <= 1).astype(int), "hate": (cls == 0).astype(int)}
    assert tuple(targets) == LABELS
    weights, biases = [], []
    for head, y in targets.items():
        # Hate speech is 6% of the tweets: weighting the classes lets the rare one shape the model.
        model, c, t, (p, r, f1) = fit(x, y, balanced=head == "hate")
        print(f"{head:6s} train={len(y)} positives={int(y.sum())} C={c:g} t={t:.2f} cv P={p:.3f} R={r:.3f} F1={f1:.3f}")
        weights.append(model.coef_[0])
        biases.append(float(model.intercept_[0] - np.log(t / (1 - t))))
    if args.check:
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        heads=np.array(LABELS),
        hash_dim=np.array(HASH_DIM),
        w_hash=np.asarray(weights, dtype=np.float16),
        bias=np.asarray(biases, dtype=np.float32),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
