"""aiestack's input guards on garak's shipped attack prompts: what share of each garak probe they stop.

garak (NVIDIA, Apache-2.0) ships its attack prompts inside the package. They are sent here, one user
turn each, through a stack in its default configuration (the default guard policy: heuristics and the
packaged injection classifier with its ``jailbreak`` head on MiniLM embeddings, PII and secrets
redaction) on the fake model, with the gateway caches off. A prompt counts as *blocked* when a guard
stopped the request, *flagged* when a guard let it through with a flag; the rest *passed*. The
detector is the guard chain alone: no model answers, so this says nothing about whether an attack
would have worked on a model (``aiestack redteam`` measures that).

Benign control (the same guards, the same run): the benign prompts of the jailbreak-classification and
deepset prompt-injection *test* splits in ../shared/data, when that folder is there. Read the figures
with two caveats: garak's ``dan.DanInTheWild`` prompts come from the same collection (Shen et al., "Do
Anything Now") as the jailbreak-classification set the classifier's ``jailbreak`` head was trained on,
so that row is not out-of-sample; and garak's prompts aim at many goals (hate speech, slurs, markdown
exfiltration) that are not prompt injection, which no injection guard is meant to stop.

garak pins ~45 packages (transformers < 5.20, torch, ...) that conflict with aiestack's environment,
so it goes into a virtual environment of its own, without its dependencies, plus the few small
packages its probe modules import; nothing from garak is copied into this repository::

    python3.11 -m venv /tmp/garak-venv
    /tmp/garak-venv/bin/pip install --no-deps garak==0.17.1
    /tmp/garak-venv/bin/pip install pyyaml xdg-base-dirs colorama tqdm jsonschema nltk langdetect \\
        mikeshardmind-base2048 ecoji zalgolib
    /tmp/garak-venv/bin/python bench/garak_dump.py /tmp/garak_prompts.jsonl \\
        dan,promptinject,latentinjection,encoding,goodside,web_injection,phrasing,grandma
    HF_HUB_OFFLINE=1 .venv/bin/python bench/garak_compare.py /tmp/garak_prompts.jsonl --per-probe 32

Offensive prompts are never printed: only counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from aiestack.build import Stack, open_stack
from aiestack.errors import AiestackError, GuardrailBlocked
from aiestack.settings import Settings
from aiestack.types import ChatRequest, Message, Params

DATA = Path(os.environ.get("AIESTACK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


async def judge(stack: Stack, prompt: str) -> tuple[str, str]:
    """(outcome, guard): blocked / flagged / passed / error, and the guard that decided."""
    request = ChatRequest(model="fake", messages=(Message("user", prompt),), params=Params(max_tokens=8),
                          metadata={"cache": "off"})
    try:
        ex = await stack.chat(request)
    except GuardrailBlocked as exc:
        return "blocked", exc.guard or "?"
    except AiestackError as exc:
        return "error", type(exc).__name__
    if ex.outcome == "blocked" or isinstance(ex.error, GuardrailBlocked):
        return "blocked", ex.error.guard if isinstance(ex.error, GuardrailBlocked) else "?"
    flagged = [v.guard for v in ex.verdicts if v.action == "flag"]
    return ("flagged", flagged[0]) if flagged else ("passed", "")


def load_prompts(path: Path, *, per_probe: int, include_inactive: bool, seed: int) -> dict[str, list[str]]:
    by_probe: dict[str, list[str]] = defaultdict(list)
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        if row["active"] or include_inactive:
            by_probe[f"{row['module']}.{row['probe']}"].append(row["prompt"])
    rng = random.Random(seed)
    return {name: rng.sample(prompts, min(per_probe, len(prompts))) for name, prompts in sorted(by_probe.items())}


def benign_prompts(limit: int, seed: int) -> dict[str, list[str]]:
    """Benign test-split prompts from ../shared/data (empty when it is not there)."""
    sets: dict[str, list[str]] = {}
    jb = DATA / "jailbreak-classification" / "test.jsonl"
    if jb.is_file():
        sets["benign: jailbreak-classification test"] = [
            r["prompt"] for r in map(json.loads, jb.open(encoding="utf-8")) if r.get("type") == "benign"
        ]
    ds = DATA / "deepset-prompt-injections" / "test.jsonl"
    if ds.is_file():
        sets["benign: deepset prompt-injections test"] = [
            r["text"] for r in map(json.loads, ds.open(encoding="utf-8")) if int(r.get("label", 1)) == 0
        ]
    rng = random.Random(seed)
    return {k: rng.sample(v, min(limit, len(v))) for k, v in sets.items()}


async def run(groups: dict[str, list[str]], concurrency: int) -> dict[str, Counter[str]]:
    work = Path(tempfile.mkdtemp(prefix="aiestack-garak-"))
    settings = Settings(data_dir=work, embedded_model=False, default_model="fake", models={"fake": {"provider": "fake"}})
    results: dict[str, Counter[str]] = {name: Counter() for name in groups}
    gate = asyncio.Semaphore(concurrency)
    async with open_stack(settings) as stack:
        await stack.embeddings.embed(["warm up"])  # load MiniLM once, before the clock matters

        async def one(group: str, prompt: str) -> None:
            async with gate:
                outcome, guard = await judge(stack, prompt)
            results[group][outcome] += 1
            if guard:
                results[group][f"guard:{guard}"] += 1

        await asyncio.gather(*(one(g, p) for g, prompts in groups.items() for p in prompts))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", type=Path, help="The JSONL that bench/garak_dump.py wrote.")
    parser.add_argument("--per-probe", type=int, default=32, help="Prompts sampled per garak probe (seeded).")
    parser.add_argument("--benign", type=int, default=200, help="Benign control prompts per set.")
    parser.add_argument("--all", action="store_true", help="Also garak's inactive probes (the *Full variants).")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    if not args.prompts.is_file():
        print(f"{args.prompts} not found: write it with bench/garak_dump.py (see this script's --help)", file=sys.stderr)
        return 2
    attacks = load_prompts(args.prompts, per_probe=args.per_probe, include_inactive=args.all, seed=args.seed)
    benign = benign_prompts(args.benign, args.seed)
    started = time.perf_counter()
    results = asyncio.run(run({**attacks, **benign}, args.concurrency))
    elapsed = time.perf_counter() - started

    print(f"\n{sum(map(len, attacks.values()))} garak prompts from {len(attacks)} probes, "
          f"{sum(map(len, benign.values()))} benign; {elapsed:.0f} s, load average {os.getloadavg()[0]:.1f}\n")
    print("| garak probe | prompts | blocked | flagged | stopped % | deciding guards |")
    print("|---|---:|---:|---:|---:|---|")
    modules: dict[str, Counter[str]] = defaultdict(Counter)
    for name, counts in results.items():
        n = sum(counts[o] for o in ("blocked", "flagged", "passed", "error"))
        guards = ", ".join(f"{g.split(':', 1)[1]} {c}" for g, c in counts.most_common() if g.startswith("guard:"))
        stopped = 100 * (counts["blocked"] + counts["flagged"]) / n if n else 0.0
        print(f"| {name} | {n} | {counts['blocked']} | {counts['flagged']} | {stopped:.0f} | {guards} |")
        if not name.startswith("benign"):
            modules[name.split(".", 1)[0]].update(counts)
    print("\n| garak module | prompts | stopped % |\n|---|---:|---:|")
    for module, counts in sorted(modules.items()):
        n = sum(counts[o] for o in ("blocked", "flagged", "passed", "error"))
        print(f"| {module} | {n} | {100 * (counts['blocked'] + counts['flagged']) / n:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
