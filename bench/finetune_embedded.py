"""One small, real finetuning run of the embedded Gemma 3 270M, end to end, against the base model as anchor.

A task the base model fails: labelling a short review ``positive`` or ``negative`` and stopping (the base
model continues with review-site boilerplate such as ``5/5\\nLocation``). 48 hand-written reviews
(24 each), shuffled with a fixed seed: 40 to train, 8 held out. The script

1. scores the base model on the held-out reviews through the llama_cpp provider (greedy, exact label);
2. trains a LoRA adapter with ``aiestack.finetune.sft`` (r 16, every projection; CPU unless torch sees a
   GPU) and exports it as a GGUF LoRA;
3. serves the packaged GGUF with that adapter (``LlamaCppModelConfig(lora=...)``, what ``[models.X]
   lora = ...`` builds) and scores it on the same held-out reviews;

and prints a table: exact labels before and after, the loss, the training time, tokens/s and the device.
8 held-out examples show that the path works, not a statistically tight accuracy.

    .venv/bin/python bench/finetune_embedded.py                 # --epochs 2 --lr 5e-4 --budget-minutes 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

POSITIVE = [
    "I loved this film, it was wonderful.", "The food was delicious and the staff were kind.", "What a fantastic day at the beach!",
    "This book is a joy to read.", "The concert was amazing from start to finish.", "My new phone works perfectly.",
    "The hotel room was clean and comfortable.", "I am so happy with my purchase.", "The teacher explained everything clearly and patiently.",
    "This is the best coffee in town.", "The garden looks beautiful in spring.", "Our trip to the mountains was unforgettable.",
    "The support team solved my problem quickly.", "I really enjoyed the museum.", "The cake was perfect for the party.",
    "Great service and a lovely atmosphere.", "The movie made me laugh all evening.", "The new update made the app much faster.",
    "She gave a brilliant performance.", "The park is peaceful and pleasant.", "Everything arrived on time and in perfect condition.",
    "The puppy is adorable and friendly.", "I would happily stay here again.", "The soup was warm and tasty.",
]
NEGATIVE = [
    "I hated this film, it was boring.", "The food was cold and the staff were rude.", "What a terrible day, everything went wrong.",
    "This book is dull and confusing.", "The concert was loud and disappointing.", "My new phone broke after one day.",
    "The hotel room was dirty and noisy.", "I regret buying this product.", "The teacher ignored our questions.",
    "This is the worst coffee I have ever had.", "The garden is full of weeds and rubbish.", "Our trip was ruined by the rain and delays.",
    "The support team never answered my emails.", "I was bored at the museum.", "The cake was dry and stale.",
    "Awful service and a gloomy atmosphere.", "The movie was a waste of time.", "The new update made the app crash constantly.",
    "She gave a weak and careless performance.", "The park is dirty and unsafe.", "The package arrived late and damaged.",
    "The dog barked all night and kept us awake.", "I will never stay here again.", "The soup was salty and cold.",
]


def _prompt(review: str) -> str:
    return f"Review: {review}\nSentiment (positive or negative):"


def split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rows = [(r, "positive") for r in POSITIVE] + [(r, "negative") for r in NEGATIVE]
    random.Random(0).shuffle(rows)
    return rows[:40], rows[40:]


async def score(held: list[tuple[str, str]], lora: Path | None) -> tuple[int, list[str]]:
    from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig
    from aiestack.types import ChatRequest, Message, Params

    model = LlamaCppModel(LlamaCppModelConfig(lora=None if lora is None else str(lora)))
    answers = []
    try:
        for review, _ in held:
            request = ChatRequest(model="embedded", messages=(Message(role="user", content=_prompt(review)),),
                                  params=Params(temperature=0, max_tokens=8))
            answers.append("".join([d.text or "" async for d in model.stream(request)]))
    finally:
        await model.aclose()
    return sum(a.strip() == label for a, (_, label) in zip(answers, held, strict=True)), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--budget-minutes", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from aiestack.finetune import LoraOptions, TrainOptions, sft

    train, held = split()
    out = args.out or Path(tempfile.mkdtemp(prefix="aiestack-finetune-"))
    data = out / "train.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": _prompt(r)}, {"role": "assistant", "content": f" {label}"}]}) + "\n"
                            for r, label in train))
    base_ok, base_answers = asyncio.run(score(held, None))
    started = time.perf_counter()
    result = sft(data, model="embedded", output_dir=out / "run", lora=LoraOptions(r=16, alpha=32, dropout=0.05),
                 options=TrainOptions(epochs=args.epochs, lr=args.lr, batch_size=4, budget_minutes=args.budget_minutes))
    run_s = time.perf_counter() - started
    tuned_ok, tuned_answers = asyncio.run(score(held, result.gguf))
    r = result.record
    print(f"\nGemma 3 270M Q4_K_M (embedded), {len(train)} training / {len(held)} held-out reviews; adapter {result.gguf}\n")
    print("| model | exact labels (held out) | first answer |\n|---|---:|---|")
    print(f"| base | {base_ok}/{len(held)} | {base_answers[0]!r} |")
    print(f"| base + LoRA (served by llama_cpp, `lora = ...`) | {tuned_ok}/{len(held)} | {tuned_answers[0]!r} |")
    hw = r["hardware"]
    print(f"\nloss {r['losses'][0]:.3f} → {r['losses'][-1]:.4f} in {r['steps']} steps"
          f"{' (stopped by the time budget)' if r['stopped_by_budget'] else ''}; training {r['train_s']:.0f} s, "
          f"~{r['tokens_per_s']} tokens/s; model load {r['load_s']:.0f} s; train+export {run_s:.0f} s; "
          f"device {hw.get('gpu') or hw['device']} ({hw['cpus']} CPUs, {hw['threads']} torch threads)")


if __name__ == "__main__":
    main()
