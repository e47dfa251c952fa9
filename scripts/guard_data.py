"""The data the indirect-injection head is trained on (scripts/train_injection.py) and measured on
(bench/guardrails.py), read from ../shared/data. Not part of the package: nothing at run time reads it.

Ordinary documents come from two sources, each split in halves by CRC-32 of a document's id (SciFact)
or file name (the standard library), so training and measuring never share a document.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def bipia_attacks(data: Path, split: str) -> list[tuple[str, str]]:
    """(``text:Category`` or ``code:Category``, attack) for every BIPIA attack of ``split``."""
    out = []
    for kind in ("text", "code"):
        table = json.loads((data / "bipia" / f"{kind}_attack_{split}.json").read_text(encoding="utf-8"))
        out += [(f"{kind}:{cat}", attack) for cat, attacks in table.items() for attack in attacks]
    return out


def attack_instruction(attack: str) -> str:
    """The instruction of an attack: for a code attack, the prose before its code block."""
    return attack.split("```")[0].strip() or attack


def bipia_contexts(data: Path, task: str, split: str) -> list[str]:
    """The contexts of a BIPIA task (``email``, ``table``, ``code``) as text (code answers are lists of lines)."""
    out = []
    for line in (data / "bipia" / task / f"{split}.jsonl").open(encoding="utf-8"):
        context = json.loads(line)["context"]
        out.append("\n".join(context) if isinstance(context, list) else str(context))
    return out


def _in_half(name: str, half: str) -> bool:
    return (zlib.crc32(name.encode()) % 2 == 0) == (half == "train")


def scifact_abstracts(data: Path, half: str, n: int) -> list[str]:
    docs = []
    for line in (data / "scifact" / "corpus.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        if _in_half(str(row["_id"]), half):
            docs.append(f"{row.get('title', '')}. {row['text']}")
    random.Random(1).shuffle(docs)
    return docs[:n]


def stdlib_docstrings(half: str, n: int) -> list[str]:
    """Docstrings longer than 80 characters of the standard library's top-level modules: prose full of
    imperatives ("Return the ...", "Use this ...") that is not an attack."""
    root = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    docs = []
    for path in sorted(root.glob("*.py")):
        if not _in_half(path.name, half):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    docs.append(doc)
    random.Random(2).shuffle(docs)
    return docs[:n]


def ordinary_documents(data: Path, *, half: str, n: int = 1500) -> list[tuple[str, str]]:
    """(source, text): ``n`` SciFact abstracts and ``n`` standard-library docstrings of one half."""
    return [("scifact", d) for d in scifact_abstracts(data, half, n)] + [("stdlib", d) for d in stdlib_docstrings(half, n)]


#: Salt of the Davidson split: change it and every figure measured on the split changes with it.
DAVIDSON_SEED = 17


def davidson_split(data: Path, split: str) -> tuple[list[str], list[int]]:
    """(tweets, classes) of one part of Davidson et al.'s hate/offensive set, which ships no split.

    The split is seeded and grouped: a tweet is in ``test`` when CRC-32 of ``"17:" + its normalised,
    lower-cased text`` is divisible by 5 (about 20%), else in ``train``; identical tweets (retweets)
    always land in the same part. Classes as in the data set: 0 hate speech, 1 offensive, 2 neither.
    The texts are offensive: callers print counts and scores only.
    """
    import csv

    from aiestack.guardrails.toxicity import normalise

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    texts, classes = [], []
    with (data / "davidson-hate-offensive" / "labeled_data.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            key = " ".join(normalise(row["tweet"]).lower().split())
            in_test = zlib.crc32(f"{DAVIDSON_SEED}:{key}".encode()) % 5 == 0
            if in_test == (split == "test"):
                texts.append(row["tweet"])
                classes.append(int(row["class"]))
    return texts, classes


#: Tweets of the Davidson ``train`` part the ``static`` injection head learns as chat (its hard negatives).
CHAT_TWEETS = 3000
#: How examples/companion's moderation suite sends chat; the head learns each tweet bare and with it.
CHAT_PREFIX = "Message: "


def chat_negatives(data: Path, n: int = CHAT_TWEETS) -> list[str]:
    """``n`` tweets of the Davidson ``train`` part (:func:`davidson_split`; never its ``test`` part, which
    bench/guardrails.py measures chat false alarms on), HTML entities decoded as the bench does, in a seeded
    order: ordinary chat, none an injection, most of it offensive. The texts are offensive: callers print
    counts and scores only."""
    import html

    tweets, _ = davidson_split(data, "train")
    order = list(range(len(tweets)))
    random.Random(DAVIDSON_SEED).shuffle(order)
    return [html.unescape(tweets[i]) for i in order[:n]]


def _bench_rows(name: str) -> list[dict[str, str]]:
    path = Path(__file__).resolve().parents[1] / "bench" / "data" / name
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def ordinary_requests(split: str) -> list[str]:
    """Ordinary requests to an assistant, none an attack, from this repository's bench data: the support
    questions of routing.jsonl, both sides of the cache_pairs.jsonl pairs (its ``tune`` split counts as
    ``train``) and the RAG and document requests of ordinary_requests.jsonl ("... Please answer from the
    documents.", "Fasse den folgenden Text ... zusammen."). ``train``: negatives the ``lexical`` injection
    head learns from; ``test``: what bench/guardrails.py measures false alarms on, less any text that is
    also in ``train`` (the cache pairs share sides). Duplicates removed."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    texts = [r["text"] for r in _bench_rows("routing.jsonl") if r["split"] == split]
    for r in _bench_rows("cache_pairs.jsonl"):
        if (r["split"] == "tune") == (split == "train"):
            texts += [r["a"], r["b"]]
    texts += [r["text"] for r in _bench_rows("ordinary_requests.jsonl") if r["split"] == split]
    seen = set(ordinary_requests("train")) if split == "test" else set()
    return [t for t in dict.fromkeys(texts) if t not in seen]


def flagged(detector: Any, texts: Sequence[str]) -> list[bool]:
    """Which ``texts`` an injection detector blocks (score at or over its threshold), scored 64 at a time."""

    async def run() -> list[bool]:
        out: list[bool] = []
        for i in range(0, len(texts), 64):
            out += [r.score >= detector.threshold for r in await detector.score_many(texts[i : i + 64])]
        return out

    return asyncio.run(run())
