"""The ``static`` injection head (issue #17): how scripts/train_injection.py trains it.

Two logistic regressions whose logits are averaged: one over the ``lexical`` head's features (hashed
n-grams and the persona cue; its own weights, not the ``lexical`` head's) and one over the packaged
static embedder's vectors (:func:`aiestack.guardrails.features.static_features`: the whole text's mean
token vector, its first and last parts' means, and the per-dimension maximum over its tokens; 4 × 256
numbers). The embedder is the semantic cache's (a Model2Vec distillation of all-MiniLM-L6-v2, shipped in
the package): about 0.1-0.2 ms a prompt, no transformer on the request path (issue #16).

    z = (1 - beta) * (v · lexical_features(text) + a) + beta * (w · static_features(text) + b),
    blocked when sigmoid(z) >= t

Trained on the ``lexical`` head's data (both *train* splits, the benign mentions' and the ordinary
requests' ``train`` halves, deepset-style concatenations at half a deepset example's weight; see
scripts/train_lexical_injection.py) plus **chat** as hard negatives: :data:`guard_data.CHAT_TWEETS`
tweets of the Davidson *train* part (``guard_data.chat_negatives``; never its test part), each bare and
as ``"Message: <tweet>"`` (how examples/companion's moderation suite sends chat), together weighted
:data:`CHAT_WEIGHTS` times one other source. The first version of this head, trained without chat,
blocked 8.9% of the Davidson test tweets (11.9% with the prefix) and 2 of the 12 companion moderation
messages, so it could not be the default.

Cross-validation: the ``lexical`` head's repeated grouped 5-fold (three shuffles, stratified by source and
label, near-duplicates held out together; a tweet and its prefixed copy are one group). Chat false alarms
are counted as the guard decides them (heuristics included, texts under four words left to the
heuristics). For every chat weight in :data:`CHAT_WEIGHTS`, ``C`` of the embedding regression in
:data:`CS`, ``beta`` in :data:`BETAS` and threshold, :func:`choose` takes the highest cross-validated
deepset F1 among the points that meet :data:`TARGETS`: jailbreak F1 ≥ 0.955, false alarms ≤ 2% on the
benign mentions, ≤ 1% on the ordinary requests and ≤ 1% on chat, bare and prefixed (the bar set before
this head's test reading). The n-gram regression keeps the ``lexical`` head's chosen ``C``.
Its test figures and why it is the default policy's head, or not: docs/guardrails.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from guard_data import CHAT_PREFIX
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold
from train_lexical_injection import (
    FOLD_SEEDS,
    THRESHOLDS,
    concatenations,
    lexical_matrix,
    near_duplicate_groups,
)
from train_lexical_injection import (
    _model as _lexical_model,
)

from aiestack.guardrails.features import Pooling, static_features
from aiestack.guardrails.heuristics import heuristic_findings, heuristic_score
from aiestack.guardrails.injection import MIN_WORDS

CS = (3.0, 10.0, 30.0)
BETAS = (0.3, 0.4, 0.5)
#: The chat sources' total weight, in units of one other source's (each of the four weighs the same).
CHAT_WEIGHTS = (0.5, 1.0, 2.0)
#: deepset F1 (at least, else the margin rule), jailbreak F1 (at least), benign-mention,
#: ordinary-request, chat and "Message: "-chat false alarms (at most).
TARGETS = (0.89, 0.955, 0.02, 0.01, 0.01, 0.01)
#: Sources: 0 deepset, 1 jailbreak, 2 benign mentions, 3 ordinary requests, 4 chat, 5 chat as "Message: ...".
CHAT, PREFIXED = 4, 5

Figures = tuple[float, float, float, float, float, float]
Point = tuple[float, float, float, float]  # (chat weight, C, beta, threshold)


@dataclass(frozen=True)
class StaticHead:
    """The head as stored: ``z = lexical_w · [n-grams, cue] + static_w · static_features + bias``, blocked at
    ``z >= 0`` (the shares ``1 - beta`` and ``beta`` and the threshold are folded in)."""

    lexical_w: np.ndarray
    static_w: np.ndarray
    bias: float
    point: Point
    cv: Figures


def static_matrix(embedder: Pooling, texts: Sequence[str]) -> np.ndarray:
    return np.stack([static_features(embedder, t) for t in texts]).astype(np.float32)


def _model(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000, class_weight="balanced")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    out: np.ndarray = np.log(p / (1 - p))
    return out


def figures(y: np.ndarray, source: np.ndarray, pred: np.ndarray, guard_pred: np.ndarray) -> Figures:
    """(deepset F1, jailbreak F1, benign, ordinary, chat and prefixed-chat false alarms); chat as the guard
    decides it (``guard_pred``: short texts left to the heuristics)."""
    return (
        float(f1_score(y[source == 0], pred[source == 0])),
        float(f1_score(y[source == 1], pred[source == 1])),
        float(np.mean(pred[source == 2])),
        float(np.mean(pred[source == 3])),
        float(np.mean(guard_pred[source == CHAT])),
        float(np.mean(guard_pred[source == PREFIXED])),
    )


def choose(figs: dict[Point, Figures]) -> Point:
    """The point of the highest deepset F1 among those whose cross-validated figures meet the other
    :data:`TARGETS`; the largest smallest margin over all of them when none does. Ties go to the first in
    ``figs``' order."""
    def margin(f: Figures) -> float:
        return min(f[0] - TARGETS[0], f[1] - TARGETS[1], *(TARGETS[i] - f[i] for i in range(2, len(TARGETS))))

    feasible = [k for k, f in figs.items() if f[1] >= TARGETS[1] and all(f[i] <= TARGETS[i] for i in range(2, len(TARGETS)))]
    if feasible:
        return max(feasible, key=lambda k: figs[k][0])
    return max(figs, key=lambda k: margin(figs[k]))


class _Data:
    """The training rows (the lexical head's, then the chat, bare and prefixed) with their features."""

    def __init__(self, embedder: Pooling, texts: list[str], y: np.ndarray, source: np.ndarray, dim: int, chat: list[str]) -> None:
        self.embedder, self.dim = embedder, dim
        n = len(texts)
        self.texts = texts + chat + [CHAT_PREFIX + t for t in chat]
        self.y = np.r_[y, np.zeros(2 * len(chat), dtype=int)]
        self.source = np.r_[source, np.full(len(chat), CHAT), np.full(len(chat), PREFIXED)].astype(int)
        first = near_duplicate_groups(texts + chat)
        self.groups = np.r_[first, first[n:]]  # a tweet and its prefixed copy are held out together
        self.base_weight = np.array([n / (4 * np.sum(source == s)) for s in source])
        self.deepset_weight = n / (4 * np.sum(source == 0))
        self.chat_rows = 2 * len(chat)
        self.x = lexical_matrix(self.texts, dim)
        self.f = static_matrix(embedder, self.texts)
        self.heur = np.array([heuristic_score(heuristic_findings(t)) for t in self.texts])
        self.short = np.array([len(t.split(None, MIN_WORDS["static"])) < MIN_WORDS["static"] for t in self.texts])
        self._concat: dict[str, np.ndarray] = {}

    def weights(self, chat_weight: float) -> np.ndarray:
        per_row = chat_weight * self.base_weight.sum() / 4 / self.chat_rows
        return np.r_[self.base_weight, np.full(self.chat_rows, per_row)]

    def _extra(self, rows: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        extra, extra_y = concatenations(self.texts, self.y, rows[self.source[rows] == 0])
        return extra, extra_y, np.full(len(extra_y), self.deepset_weight * 0.5)

    def _static_of(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._concat]
        if missing:
            self._concat.update(zip(missing, static_matrix(self.embedder, missing), strict=True))
        return np.stack([self._concat[t] for t in texts])

    def fit_lexical(self, rows: np.ndarray, weight: np.ndarray, c: float) -> LogisticRegression:
        extra, extra_y, extra_w = self._extra(rows)
        x = sp.vstack([self.x[rows], lexical_matrix(extra, self.dim)]).tocsr()
        return _lexical_model(c).fit(x, np.r_[self.y[rows], extra_y], sample_weight=np.r_[weight[rows], extra_w])

    def fit_static(self, rows: np.ndarray, weight: np.ndarray, c: float) -> LogisticRegression:
        extra, extra_y, extra_w = self._extra(rows)
        f = np.vstack([self.f[rows], self._static_of(extra)])
        return _model(c).fit(f, np.r_[self.y[rows], extra_y], sample_weight=np.r_[weight[rows], extra_w])


def fit_static(embedder: Pooling, texts: list[str], y: np.ndarray, source: np.ndarray, dim: int, lexical_c: float,
               chat: list[str]) -> StaticHead:
    """The ``static`` head, both regressions refit on every row after the choice (:func:`choose`) among the
    figures of the repeated grouped cross-validation (the mean over :data:`FOLD_SEEDS`). ``texts`` etc.:
    the ``lexical`` head's training data (sources 0-3); ``chat``: tweets, learned bare and prefixed."""
    d = _Data(embedder, texts, y, source, dim, chat)
    runs: dict[Point, list[Figures]] = {}
    for fold_seed in FOLD_SEEDS:
        folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=fold_seed).split(d.texts, d.source * 2 + d.y, d.groups))
        z_lex = {cw: np.zeros(len(d.y)) for cw in CHAT_WEIGHTS}
        z_emb = {(cw, c): np.zeros(len(d.y)) for cw in CHAT_WEIGHTS for c in CS}
        for tr, va in folds:
            for cw in CHAT_WEIGHTS:
                weight = d.weights(cw)
                z_lex[cw][va] = _logit(d.fit_lexical(tr, weight, lexical_c).predict_proba(d.x[va])[:, 1])
                for c in CS:
                    z_emb[cw, c][va] = _logit(d.fit_static(tr, weight, c).predict_proba(d.f[va])[:, 1])
        for (cw, c), ze in z_emb.items():
            for beta in BETAS:
                p = 1 / (1 + np.exp(-((1 - beta) * z_lex[cw] + beta * ze)))
                guarded = np.where(d.short, 0.0, p)
                for t in THRESHOLDS:
                    runs.setdefault((cw, c, beta, t), []).append(figures(d.y, d.source, np.maximum(p, d.heur) >= t, np.maximum(guarded, d.heur) >= t))
        print(f"static     fold seed {fold_seed} done", flush=True)
    figs: dict[Point, Figures] = {k: tuple(float(x) for x in np.mean(v, axis=0)) for k, v in runs.items()}  # type: ignore[misc]
    cw, c, beta, t = choose(figs)
    weight, everything = d.weights(cw), np.arange(len(d.y))
    lexical = d.fit_lexical(everything, weight, lexical_c)
    embedding = d.fit_static(everything, weight, c)
    bias = (1 - beta) * lexical.intercept_[0] + beta * embedding.intercept_[0] - float(_logit(np.array(t)))
    return StaticHead((1 - beta) * lexical.coef_[0], beta * embedding.coef_[0], float(bias), (cw, c, beta, t), figs[cw, c, beta, t])
