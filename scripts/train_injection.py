"""Train the packaged injection classifier (src/aiestack/guardrails/data/injection.npz), reproducibly.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_injection.py [--data /work/shared/data] [--check]

Uses ONLY the *train* splits of deepset/prompt-injections (head ``injection``) and
jackhhao/jailbreak-classification (head ``jailbreak``); the head ``combined`` (the default policy's)
is trained on both train splits at once plus the ``train`` half of bench/data/benign_mentions.jsonl
(benign questions that mention "ignore", "instructions", "system prompt", ... as hard negatives; the
``test`` half is only measured), see :func:`fit_combined`. Features: the all-MiniLM-L6-v2 embedding of
the text (as aiestack computes it at run time) concatenated with hashed word/character n-grams
(:func:`aiestack.guardrails.features.hashed_ngrams`). Each head is an L2-regularised logistic
regression whose strength ``C`` and decision threshold are chosen by stratified 5-fold cross-validation
on the train split (fixed seeds); the threshold is folded into the intercept, so 0.5 means it. Lexical-only heads (n-grams without the embedding) are trained the same way, for
stacks without the embedding model. ``--check`` prints the cross-validated F1 and writes nothing.

The ``lexical`` head (``--only-lexical`` retrains just it and the ``static`` head) is trained by
scripts/train_lexical_injection.py (see its docstring): both train splits, the benign mentions and
ordinary requests, hashed n-grams and a persona cue, no embedding model. The ``static`` head (the
default policy's; ``--only-static`` retrains just it) averages a regression over the same features with
one over the packaged static embedder's vectors, both trained on that data plus chat as hard negatives
(scripts/train_static_injection.py). ``--only-static --check`` prints both heads' cross-validated
figures (lexical: deepset F1 0.862, jailbreak 0.955, benign 2.0%, ordinary 0.7%; static: 0.898, 0.958,
1.6%, 0.6%, chat 0.08%, "Message: " chat 0.02%) and writes nothing (about 12 minutes on 2 busy cores).
The shipped ``lexical`` arrays are the ones first published (a rerun matches them to float16 rounding).

The ``indirect`` head (``--only-indirect`` retrains just it and keeps the other heads) judges the
sentences and lines of *retrieved* text, one at a time (:mod:`aiestack.guardrails.segments`). It is
lexical only (hashed n-grams with a sentence-start marker), so checking every chunk costs no
embedding. Positives: the attack instructions of the BIPIA *train* attacks (for code attacks, the prose
before the code block). Negatives: every segment of ordinary documents: the BIPIA *train* email and
code contexts, half of the SciFact abstracts and half of the Python 3.11 standard library's
docstrings (a document belongs to a half by CRC-32 of its id or file name; the other halves are
what bench/guardrails.py measures false positives on). ``C`` and the threshold are chosen by a
grouped 5-fold cross-validation: attack *categories* are held out (the test attacks are of other
categories) and documents are held out whole; the chosen threshold is the lowest whose held-out
false-positive rate per document is at most 2% for every source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from aiestack.guardrails.features import hashed_ngrams
from aiestack.guardrails.segments import segment_features_text, segments
from aiestack.models.static_embeddings import StaticEmbeddings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_data import (
    CHAT_TWEETS,
    attack_instruction,
    bipia_attacks,
    bipia_contexts,
    chat_negatives,
    ordinary_documents,
    ordinary_requests,
)
from train_lexical_injection import fit_lexical
from train_static_injection import StaticHead, fit_static

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
            m = _model(c)
            m.fit(x[tr], y[tr])
            probs[va] = m.predict_proba(x[va])[:, 1]
        for t in THRESHOLDS:
            f1 = f1_score(y, probs >= t)
            if f1 > best_f1 + 1e-9:
                best_c, best_t, best_f1 = c, t, f1
    model = _model(best_c).fit(x, y)
    return model, best_c, best_t, best_f1


#: What the combined head must reach at once (issue #17): F1 on deepset, F1 on the jailbreak set, and
#: the false-alarm rate on benign questions that mention the words attacks use.
TARGETS = (0.85, 0.95, 0.02)
BENIGN = Path(__file__).resolve().parents[1] / "bench" / "data" / "benign_mentions.jsonl"


def benign_mentions(split: str) -> list[str]:
    """The benign questions of bench/data/benign_mentions.jsonl of ``split`` (``train``: hard negatives
    the combined head learns from; ``test``: what bench/guardrails.py measures false alarms on)."""
    rows = [json.loads(line) for line in BENIGN.open(encoding="utf-8")]
    return [r["text"] for r in rows if r["split"] == split]


def fit_combined(x: sp.csr_matrix, y: np.ndarray, source: np.ndarray) -> tuple[LogisticRegression, float, float, tuple[float, float, float]]:
    """The combined head: one model for deepset's injections, the jailbreak set's jailbreaks and the
    benign mentions (``source`` 0, 1, 2), each source weighted alike (the jailbreak set is twice
    deepset's size). ``C`` and the threshold maximise the smallest margin over :data:`TARGETS` of the
    out-of-fold figures (folds stratified by source and label). Returns (model, C, threshold,
    cross-validated (deepset F1, jailbreak F1, benign false-alarm rate))."""
    weight = np.array([len(y) / (3 * np.sum(source == s)) for s in source])
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED).split(x, source * 2 + y))
    best: tuple[float, float, float, tuple[float, float, float]] | None = None
    for c in CS:
        probs = np.zeros(len(y))
        for tr, va in folds:
            probs[va] = _model(c).fit(x[tr], y[tr], sample_weight=weight[tr]).predict_proba(x[va])[:, 1]
        for t in THRESHOLDS:
            pred = probs >= t
            figures = (
                float(f1_score(y[source == 0], pred[source == 0])),
                float(f1_score(y[source == 1], pred[source == 1])),
                float(np.mean(pred[source == 2])),
            )
            margin = min(figures[0] - TARGETS[0], figures[1] - TARGETS[1], TARGETS[2] - figures[2])
            if best is None or margin > best[0] + 1e-9:
                best = (margin, c, t, figures)
    assert best is not None
    _, c, t, figures = best
    return _model(c).fit(x, y, sample_weight=weight), c, t, figures


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def train_indirect(data: Path) -> tuple[np.ndarray, float]:
    """The ``indirect`` head's (weights, bias with the threshold folded in)."""
    pos = [(cat, attack_instruction(a)) for cat, a in bipia_attacks(data, "train")]
    docs = [("email", d) for d in bipia_contexts(data, "email", "train")]
    docs += [("code", d) for d in bipia_contexts(data, "code", "train")]
    docs += ordinary_documents(data, half="train")
    doc_x = [lex_matrix([s.text for s in segments(d)]) for _, d in docs]
    pos_x = lex_matrix([a for _, a in pos])
    cats = sorted({c for c, _ in pos})
    np.random.default_rng(SEED).shuffle(cats)
    fold_of = {c: i % 5 for i, c in enumerate(cats)}
    kinds = np.array([k for k, _ in docs])
    best: tuple[float, float, float] | None = None  # (recall, C, threshold)
    for c in (4.0, 16.0):
        pos_p = np.zeros(len(pos))
        doc_p = np.zeros(len(docs))
        for f in range(5):
            tr = [i for i, (cat, _) in enumerate(pos) if fold_of[cat] != f]
            neg = [x for i, x in enumerate(doc_x) if i % 5 != f and x.shape[0]]
            m = _model(c).fit(sp.vstack([pos_x[tr], *neg]), np.r_[np.ones(len(tr)), np.zeros(sum(x.shape[0] for x in neg))])
            te = [i for i, (cat, _) in enumerate(pos) if fold_of[cat] == f]
            pos_p[te] = m.predict_proba(pos_x[te])[:, 1]
            for i, x in enumerate(doc_x):
                if i % 5 == f and x.shape[0]:
                    doc_p[i] = m.predict_proba(x)[:, 1].max()
        for t in np.arange(0.5, 0.991, 0.01):
            fprs = {k: float(np.mean(doc_p[kinds == k] >= t)) for k in sorted(set(kinds))}
            if max(fprs.values()) <= 0.02:
                recall = float(np.mean(pos_p >= t))
                print(f"indirect   C={c:g} t={t:.2f} held-out-category recall={recall:.3f} document FPR {fprs}")
                if best is None or recall > best[0] + 1e-9:
                    best = (recall, c, float(t))
                break
    assert best is not None, "no threshold keeps the false-positive rate at 2%"
    _, c, t = best
    neg_all = [x for x in doc_x if x.shape[0]]
    y = np.r_[np.ones(len(pos)), np.zeros(sum(x.shape[0] for x in neg_all))]
    model = _model(c).fit(sp.vstack([pos_x, *neg_all]), y)
    print(f"indirect   chosen C={c:g} t={t:.2f}; {len(pos)} attacks, {int(len(y) - len(pos))} document segments")
    return model.coef_[0], float(model.intercept_[0] - _logit(t))


def train_lexical(data: Path, *, only_static: bool = False) -> dict[str, np.ndarray]:
    """The ``lexical`` and ``static`` heads (scripts/train_lexical_injection.py, scripts/train_static_injection.py)
    as the arrays they are stored as; ``only_static``: the ``static`` head's only (the ``lexical`` head is
    still cross-validated, for its ``C``)."""
    dx, dy = load(data, "deepset-prompt-injections", "train")
    jx, jy = load(data, "jailbreak-classification", "train")
    bx, ox = benign_mentions("train"), ordinary_requests("train")
    texts = dx + jx + bx + ox
    y = np.r_[dy, jy, np.zeros(len(bx) + len(ox), dtype=int)]
    source = np.r_[np.zeros(len(dx)), np.ones(len(jx)), np.full(len(bx), 2), np.full(len(ox), 3)].astype(int)
    w, b, c, t, (fd, fj, fb, fo) = fit_lexical(texts, y, source, HASH_DIM)
    print(f"lexical    train={len(y)} C={c:g} t={t:.2f} grouped cv (mean of 3 shuffles): deepset F1={fd:.3f} jailbreak F1={fj:.3f} "
          f"benign false alarms={fb:.3f} ordinary false alarms={fo:.3f}")
    head = fit_static(StaticEmbeddings(), texts, y, source, HASH_DIM, c, chat_negatives(data))
    cw, sc, beta, st = head.point
    fd, fj, fb, fo, fc, fm = head.cv
    print(f"static     train={len(y)} + {2 * CHAT_TWEETS} chat, chat weight={cw:g} C={sc:g} beta={beta:g} t={st:.2f} grouped cv "
          f"(mean of 3 shuffles): deepset F1={fd:.3f} jailbreak F1={fj:.3f} benign false alarms={fb:.3f} "
          f"ordinary false alarms={fo:.3f} chat false alarms={fc:.4f} 'Message: ' chat={fm:.4f}")
    if only_static:
        return _static_arrays(head)
    return {
        "lexical_heads": np.array(["lexical"]),
        "lexical_w": w[None, :].astype(np.float16),
        "lexical_bias": np.array([b], dtype=np.float32),
        **_static_arrays(head),
    }


def _static_arrays(head: StaticHead) -> dict[str, np.ndarray]:
    """The ``static`` head as stored: z = static_lexical_w · [n-grams, cue] + static_w · static_features + static_bias."""
    return {
        "static_heads": np.array(["static"]),
        "static_lexical_w": head.lexical_w.astype(np.float16),
        "static_w": head.static_w.astype(np.float32),
        "static_bias": np.array(head.bias, dtype=np.float32),
    }


def _model(c: float) -> LogisticRegression:
    """Every head's model: L2 logistic regression, classes balanced, deterministic."""
    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced", solver="liblinear", random_state=SEED)


def lex_matrix(texts: list[str]) -> sp.csr_matrix:
    if not texts:
        return sp.csr_matrix((0, HASH_DIM), dtype=np.float32)
    return sp.csr_matrix(np.stack([hashed_ngrams(segment_features_text(t), HASH_DIM) for t in texts]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("AIESTACK_DATA", "/work/shared/data")))
    parser.add_argument("--check", action="store_true", help="print cross-validated F1 only")
    parser.add_argument("--cache", type=Path, default=None, help="a folder to keep the train embeddings in between runs")
    parser.add_argument("--only-indirect", action="store_true", help="retrain the indirect head only; keep the other heads")
    parser.add_argument("--only-lexical", action="store_true", help="retrain the lexical and static heads only; keep the other heads")
    parser.add_argument("--only-static", action="store_true", help="retrain the static head only; keep the other heads")
    args = parser.parse_args()
    if args.only_lexical or args.only_static:
        lexical = train_lexical(args.data, only_static=args.only_static)
        if not args.check:
            with np.load(OUT, allow_pickle=False) as old:
                kept = {k: old[k] for k in old.files if k not in lexical and not k.startswith("static_")}
            np.savez_compressed(OUT, **kept, **lexical)
            print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
        return
    ind_w, ind_b = train_indirect(args.data)
    if args.only_indirect:
        if args.check:
            return
        with np.load(OUT, allow_pickle=False) as old:
            kept = {k: old[k] for k in old.files if not k.startswith("indirect_")}
        np.savez_compressed(OUT, **kept, indirect_w_hash=ind_w.astype(np.float16), indirect_bias=np.array(ind_b, dtype=np.float32))
        print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
        return
    heads = {"injection": "deepset-prompt-injections", "jailbreak": "jailbreak-classification"}
    w_emb, w_hash, bias, lex_w, lex_b = [], [], [], [], []
    sets: list[tuple[list[str], np.ndarray, np.ndarray]] = []
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
        sets.append((texts, y, emb))
    benign = benign_mentions("train")
    b_emb = embed(benign, args.cache / "benign_mentions_train.npy" if args.cache else None)
    texts = sets[0][0] + sets[1][0] + benign
    y = np.r_[sets[0][1], sets[1][1], np.zeros(len(benign), dtype=int)]
    source = np.r_[np.zeros(len(sets[0][1])), np.ones(len(sets[1][1])), np.full(len(benign), 2)].astype(int)
    emb = np.vstack([sets[0][2], sets[1][2], b_emb])
    for kind, (model, c, t, (fd, fj, fpr)) in (
        ("full", fit_combined(features(texts, emb), y, source)),
        ("lexical", fit_combined(features(texts, None), y, source)),
    ):
        print(f"combined   {kind:8s} train={len(y)} C={c:g} t={t:.2f} cv: deepset F1={fd:.3f} jailbreak F1={fj:.3f} benign false alarms={fpr:.3f}")
        coef = model.coef_[0]
        if kind == "full":
            w_emb.append(coef[:dim])
            w_hash.append(coef[dim:])
            bias.append(model.intercept_[0] - _logit(t))
        else:
            lex_w.append(coef)
            lex_b.append(model.intercept_[0] - _logit(t))
    lexical = train_lexical(args.data)
    if args.check:
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        heads=np.array([*heads, "combined"]),
        embedding_model=np.array("all-MiniLM-L6-v2"),
        hash_dim=np.array(HASH_DIM),
        w_emb=np.asarray(w_emb, dtype=np.float16),
        w_hash=np.asarray(w_hash, dtype=np.float16),
        bias=np.asarray(bias, dtype=np.float32),
        lex_w_hash=np.asarray(lex_w, dtype=np.float16),
        lex_bias=np.asarray(lex_b, dtype=np.float32),
        indirect_w_hash=ind_w.astype(np.float16),
        indirect_bias=np.array(ind_b, dtype=np.float32),
        **lexical,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
