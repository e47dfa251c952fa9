"""The ``static`` injection head (issue #17): how scripts/train_injection.py trains it.

The ``lexical`` head's logit averaged with a second logistic regression over the packaged static
embedder's vectors (:func:`aiestack.guardrails.features.static_features`: the whole text's mean token
vector, its first and last parts' means, and the per-dimension maximum over its tokens; 4 × 256
numbers). The embedder is the semantic cache's (a Model2Vec distillation of all-MiniLM-L6-v2, shipped in
the package): about 0.1-0.2 ms a prompt, no transformer on the request path (issue #16).

    z = (1 - beta) * z_lexical + beta * (w · static_features(text) + b),  blocked when sigmoid(z) >= t

Trained on exactly the ``lexical`` head's data (both *train* splits, the benign mentions' and the
ordinary requests' ``train`` halves, deepset-style concatenations at half a deepset example's weight;
see scripts/train_lexical_injection.py), with the same repeated grouped cross-validation: the
``lexical`` head's out-of-fold logits (its own chosen ``C``) and the embedding head's are combined for
every (``C``, ``beta``, threshold) in :data:`CS`, :data:`BETAS` and the lexical head's thresholds, and
:func:`choose` takes the highest cross-validated deepset F1 among the points that meet
:data:`TARGETS` (jailbreak F1 ≥ 0.955, false alarms ≤ 2% on the benign mentions and ≤ 1% on the ordinary
requests: the bar set before any test figure of this head was read). On the
embedding alone the head is weaker than the n-grams (cross-validated deepset F1 about 0.85, jailbreak
0.92, benign false alarms 5%); averaged with them it catches deepset injections the n-grams miss.
Its test figures, and why it is opt-in rather than the default (it blocks chat that ``lexical``
passes): docs/guardrails.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from train_lexical_injection import (
    FOLD_SEEDS,
    THRESHOLDS,
    _fit,
    concatenations,
    figures,
    lexical_matrix,
    near_duplicate_groups,
)

from aiestack.guardrails.features import Pooling, static_features
from aiestack.guardrails.heuristics import heuristic_findings, heuristic_score

CS = (3.0, 10.0, 30.0)
BETAS = (0.3, 0.4, 0.5)
#: deepset F1 (at least, else the margin rule), jailbreak F1 (at least), benign-mention and
#: ordinary-request false alarms (at most).
TARGETS = (0.89, 0.955, 0.02, 0.01)

Figures = tuple[float, float, float, float]


def static_matrix(embedder: Pooling, texts: Sequence[str]) -> np.ndarray:
    return np.stack([static_features(embedder, t) for t in texts]).astype(np.float32)


def _model(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000, class_weight="balanced")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    out: np.ndarray = np.log(p / (1 - p))
    return out


def _fit_static(embedder: Pooling, f: np.ndarray, texts: list[str], y: np.ndarray, source: np.ndarray, weight: np.ndarray,
                rows: np.ndarray, c: float) -> LogisticRegression:
    """The embedding head on ``rows`` and their concatenations (as the lexical head's ``_fit`` makes them)."""
    extra, extra_y = concatenations(texts, y, rows[source[rows] == 0])
    wa = np.full(len(extra_y), weight[source == 0][0] * 0.5)
    return _model(c).fit(np.vstack([f[rows], static_matrix(embedder, extra)]), np.r_[y[rows], extra_y],
                         sample_weight=np.r_[weight[rows], wa])


def choose(figs: dict[tuple[float, float, float], Figures]) -> tuple[float, float, float]:
    """The (C, beta, threshold) of the highest deepset F1 among those whose cross-validated figures meet
    the other three :data:`TARGETS`; the largest smallest margin over all four when none does. Ties go
    to the first in ``figs``' order."""
    def margin(f: Figures) -> float:
        return min(f[0] - TARGETS[0], f[1] - TARGETS[1], TARGETS[2] - f[2], TARGETS[3] - f[3])

    feasible = [k for k, f in figs.items() if f[1] >= TARGETS[1] and f[2] <= TARGETS[2] and f[3] <= TARGETS[3]]
    if feasible:
        return max(feasible, key=lambda k: figs[k][0])
    return max(figs, key=lambda k: margin(figs[k]))


def fit_static(embedder: Pooling, texts: list[str], y: np.ndarray, source: np.ndarray, dim: int, lexical_c: float
               ) -> tuple[np.ndarray, float, float, float, float, float, Figures]:
    """(weights over :func:`static_features`, bias, beta, C, threshold, the weight of the lexical
    head's raw logit, cross-validated figures: the mean over :data:`FOLD_SEEDS`), the embedding head
    refit on everything after the choice. The caller folds the thresholds into the bias."""
    x = lexical_matrix(texts, dim)
    f = static_matrix(embedder, texts)
    heur = np.array([heuristic_score(heuristic_findings(t)) for t in texts])
    weight = np.array([len(y) / (4 * np.sum(source == s)) for s in source])
    groups = near_duplicate_groups(texts)
    runs: dict[tuple[float, float, float], list[Figures]] = {}
    for fold_seed in FOLD_SEEDS:
        folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=fold_seed).split(texts, source * 2 + y, groups))
        z_lex = np.zeros(len(y))
        z_emb = {c: np.zeros(len(y)) for c in CS}
        for tr, va in folds:
            z_lex[va] = _logit(_fit(x, texts, y, source, weight, tr, lexical_c, dim).predict_proba(x[va])[:, 1])
            for c in CS:
                z_emb[c][va] = _logit(_fit_static(embedder, f, texts, y, source, weight, tr, c).predict_proba(f[va])[:, 1])
        for c in CS:
            for beta in BETAS:
                p = 1 / (1 + np.exp(-((1 - beta) * z_lex + beta * z_emb[c])))
                for t in THRESHOLDS:
                    runs.setdefault((c, beta, t), []).append(figures(y, source, np.maximum(p, heur) >= t))
        print(f"static     fold seed {fold_seed} done", flush=True)
    figs = {k: (float(np.mean([r[0] for r in v])), float(np.mean([r[1] for r in v])), float(np.mean([r[2] for r in v])),
                float(np.mean([r[3] for r in v]))) for k, v in runs.items()}
    c, beta, t = choose(figs)
    model = _fit_static(embedder, f, texts, y, source, weight, np.arange(len(y)), c)
    return model.coef_[0], float(model.intercept_[0]), beta, c, t, 1 - beta, figs[(c, beta, t)]

