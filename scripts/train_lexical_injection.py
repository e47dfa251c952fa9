"""The ``lexical`` injection head (issue #17; the default policy's until the chat-trained ``static`` head): how
scripts/train_injection.py trains it. The ``static`` head, the default, averages a regression over the same
features with one over the static embedder, both also trained on chat (scripts/train_static_injection.py).

One logistic regression over hashed word and character n-grams plus one hand-written cue,
:func:`aiestack.guardrails.features.persona_imposed`; no embedding model, so it costs microseconds on
the request path (issue #16). Trained on the *train* splits only:

- deepset/prompt-injections (source 0) and jackhhao/jailbreak-classification (source 1);
- the ``train`` half of bench/data/benign_mentions.jsonl (source 2: benign questions that mention
  "ignore", "instructions", "developer mode", "system prompt", "pretend");
- the ``train`` halves of this repository's ordinary requests (source 3, ``guard_data.ordinary_requests``:
  support questions, cache-benchmark questions, RAG and document requests such as "... Please answer
  from the documents.");
- concatenations made from deepset's train split, the way its injections are built: each injection
  after a random benign deepset question (an injection), and as many benign questions after benign
  questions (not one), at half a deepset example's weight. An injection appended to an ordinary
  question then still scores as one.

The persona conflict is handled by the cue, not by relabelling: deepset labels a persona that the
message *imposes* on the assistant ("I want you to act as ...", "now you are ...") an injection, and the
jailbreak set's benign role-play *defines* a character the way a system prompt does ("You are a
medieval blacksmith ..."). The cue marks the first kind, so the n-grams the two share ("you are", "act")
need not carry the difference. Relabelling or dropping the jailbreak set's 26 benign train prompts that
match the cue measured no better in grouped cross-validation.

Each source is weighted alike. ``C`` and the threshold are chosen on the out-of-fold scores
(heuristics included as the guard runs them) of a 5-fold cross-validation stratified by source and label
and *grouped by near-duplicates* (texts sharing half their word 3-grams are held out together: both sets
repeat templates, and ordinary folds score them as seen), repeated with three shuffles and averaged
(one shuffle's figures move by about 0.005, as much as the differences being chosen between). The
choice (:func:`choose`): the highest deepset F1 among the (C, threshold) whose averaged figures meet the
other targets (jailbreak F1 ≥ 0.95, false alarms ≤ 2% on the benign mentions and on the ordinary
requests); the largest smallest margin over all four targets when none does. It picks C=64, t=0.55,
the head that ships.

Tried on TRAIN for issue #17's deepset target and not kept (figures, TEST included, in
bench/guardrails.md): the BIPIA *train* attacks appended to benign deepset questions as injections;
2^15 hash dimensions; the heuristics' rules as features; a second head without the jailbreak set;
scoring each sentence.
"""

from __future__ import annotations

import random
import re

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold

from aiestack.guardrails.features import hashed_ngrams, persona_imposed
from aiestack.guardrails.heuristics import heuristic_findings, heuristic_score

CS = (4.0, 16.0, 64.0)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.3, 0.91, 0.05))
#: deepset F1, jailbreak F1 (at least), benign-mention and ordinary-request false alarms (at most).
TARGETS = (0.85, 0.95, 0.02, 0.02)
SEED = 0
#: The grouped 5-fold cross-validation is repeated with these shuffles and its figures averaged.
FOLD_SEEDS = (0, 1, 2)


def lexical_matrix(texts: list[str], dim: int) -> sp.csr_matrix:
    """Rows of hashed n-grams (``dim`` columns) and the persona cue (one more): the head's features."""
    rows = [np.append(hashed_ngrams(t, dim), np.float32(persona_imposed(t))) for t in texts]
    return sp.csr_matrix(np.stack(rows)) if rows else sp.csr_matrix((0, dim + 1), dtype=np.float32)


def near_duplicate_groups(texts: list[str], jaccard: float = 0.5) -> np.ndarray:
    """A group id per text: texts whose word 3-gram sets overlap by ``jaccard`` or more share one (transitively)."""
    shingles = []
    for t in texts:
        w = re.findall(r"\w+", t.lower())
        shingles.append({" ".join(w[i : i + 3]) for i in range(max(1, len(w) - 2))})
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index: dict[str, list[int]] = {}
    for i, s in enumerate(shingles):
        for g in s:
            index.setdefault(g, []).append(i)
    for i, s in enumerate(shingles):
        shared: dict[int, int] = {}
        for g in s:
            holders = index[g]
            if len(holders) > 200:  # a common phrase says nothing about duplication
                continue
            for j in holders:
                if j > i:
                    shared[j] = shared.get(j, 0) + 1
        for j, n in shared.items():
            if n / (len(s) + len(shingles[j]) - n) >= jaccard:
                parent[root(i)] = root(j)
    # A group is named by its first member: which member ends up the union-find root depends on the
    # order sets are walked in, which changes with PYTHONHASHSEED, and the folds follow the group ids.
    first: dict[int, int] = {}
    return np.array([first.setdefault(root(i), i) for i in range(len(texts))])


def concatenations(texts: list[str], y: np.ndarray, rows: np.ndarray, seed: int = SEED) -> tuple[list[str], np.ndarray]:
    """Deepset-style concatenations of the deepset ``rows``: every injection after a random benign
    question (label 1), and as many benign questions after benign questions (label 0)."""
    rng = random.Random(seed)
    pos = [i for i in rows if y[i] == 1]
    neg = [i for i in rows if y[i] == 0]
    out, labels = [], []
    for label, items in ((1, pos), (0, neg[: len(pos)])):
        for i in items:
            out.append(texts[rng.choice(neg)].rstrip() + rng.choice([" ", ". ", "\n"]) + texts[i])
            labels.append(label)
    return out, np.array(labels, dtype=int)


def _model(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced", solver="liblinear", random_state=SEED)


def _fit(x: sp.csr_matrix, texts: list[str], y: np.ndarray, source: np.ndarray, weight: np.ndarray, rows: np.ndarray, c: float, dim: int) -> LogisticRegression:
    deepset = rows[source[rows] == 0]
    extra, extra_y = concatenations(texts, y, deepset)
    xa = lexical_matrix(extra, dim)
    wa = np.full(len(extra_y), weight[source == 0][0] * 0.5)
    return _model(c).fit(sp.vstack([x[rows], xa]).tocsr(), np.r_[y[rows], extra_y], sample_weight=np.r_[weight[rows], wa])


def figures(y: np.ndarray, source: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
    """(deepset F1, jailbreak F1, benign-mention false alarms, ordinary-request false alarms)."""
    return (
        float(f1_score(y[source == 0], pred[source == 0])),
        float(f1_score(y[source == 1], pred[source == 1])),
        float(np.mean(pred[source == 2])),
        float(np.mean(pred[source == 3])),
    )


def choose(figs: dict[tuple[float, float], tuple[float, float, float, float]]) -> tuple[float, float]:
    """The (C, threshold) of the highest deepset F1 among those whose cross-validated figures meet the
    three other targets (jailbreak F1, both false-alarm rates); the largest smallest margin over all four
    targets when none does. Ties go to the first in ``figs``' order."""
    def margin(f: tuple[float, float, float, float]) -> float:
        return min(f[0] - TARGETS[0], f[1] - TARGETS[1], TARGETS[2] - f[2], TARGETS[3] - f[3])

    feasible = [k for k, f in figs.items() if f[1] >= TARGETS[1] and f[2] <= TARGETS[2] and f[3] <= TARGETS[3]]
    if feasible:
        return max(feasible, key=lambda k: figs[k][0])
    return max(figs, key=lambda k: margin(figs[k]))


def fit_lexical(texts: list[str], y: np.ndarray, source: np.ndarray, dim: int) -> tuple[np.ndarray, float, float, float, tuple[float, float, float, float]]:
    """(weights: ``dim`` n-gram weights then the cue's; bias with the threshold folded in; C; threshold;
    cross-validated figures, the mean over :data:`FOLD_SEEDS`) of the ``lexical`` head, refit on everything
    after the choice (:func:`choose`)."""
    x = lexical_matrix(texts, dim)
    heur = np.array([heuristic_score(heuristic_findings(t)) for t in texts])
    weight = np.array([len(y) / (4 * np.sum(source == s)) for s in source])
    groups = near_duplicate_groups(texts)
    runs: dict[tuple[float, float], list[tuple[float, float, float, float]]] = {}
    for fold_seed in FOLD_SEEDS:
        folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=fold_seed).split(texts, source * 2 + y, groups))
        for c in CS:
            probs = np.zeros(len(y))
            for tr, va in folds:
                probs[va] = _fit(x, texts, y, source, weight, tr, c, dim).predict_proba(x[va])[:, 1]
            for t in THRESHOLDS:
                runs.setdefault((c, t), []).append(figures(y, source, np.maximum(probs, heur) >= t))
        print(f"lexical    fold seed {fold_seed} done", flush=True)
    figs = {k: (float(np.mean([r[0] for r in v])), float(np.mean([r[1] for r in v])), float(np.mean([r[2] for r in v])),
                float(np.mean([r[3] for r in v]))) for k, v in sorted(runs.items())}
    c, t = choose(figs)
    model = _fit(x, texts, y, source, weight, np.arange(len(y)), c, dim)
    return model.coef_[0], float(model.intercept_[0] - np.log(t / (1 - t))), c, t, figs[(c, t)]
