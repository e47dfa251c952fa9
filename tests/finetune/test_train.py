"""LoRA SFT and DPO on the tiny Gemma 3 (read from GGUF, as the embedded model is), end to end:
train → GGUF LoRA → served by the llama_cpp provider → the answer it learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")

from aiestack.finetune import FinetuneResult, LoraOptions, TrainOptions, dpo, sft
from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig
from aiestack.types import ChatRequest, Message, Params

FACTS = [("colour of the sky?", "blue"), ("colour of grass?", "green"), ("colour of snow?", "white"), ("colour of coal?", "black")]
LORA = LoraOptions(r=8, alpha=16, dropout=0.0)


def _chat_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in FACTS))
    return path


async def _answer(gguf: Path, lora: Path | None, question: str, scale: float = 1.0) -> str:
    model = LlamaCppModel(LlamaCppModelConfig(path=str(gguf), lora=None if lora is None else str(lora), lora_scale=scale,
                                              n_ctx=512, n_threads=1))
    try:
        request = ChatRequest(model="tiny", messages=(Message(role="user", content=question),), params=Params(temperature=0, max_tokens=12))
        return "".join([d.text or "" async for d in model.stream(request)])
    finally:
        await model.aclose()


@pytest.fixture(scope="module")
def sft_run(tiny_gemma3: Path, tmp_path_factory: pytest.TempPathFactory) -> FinetuneResult:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("sft")
        return sft(_chat_file(tmp / "facts.jsonl"), model=str(tiny_gemma3), output_dir=tmp / "run", lora=LORA,
                   options=TrainOptions(max_steps=30, lr=3e-3, batch_size=4, seed=0))
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_sft_memorises_and_records_the_run(sft_run: FinetuneResult, tiny_gemma3: Path) -> None:
    losses = sft_run.losses
    assert len(losses) == 30
    assert losses[-1] < 0.1 * losses[0]  # memorised: ~22 → < 0.2 in 30 steps
    record = json.loads(sft_run.record_path.read_text())
    assert record["dataset"]["content_hash"] and record["dataset"]["rows"] == 4
    assert record["base_model"]["gguf"] == str(tiny_gemma3) and record["base_model"]["architecture"] == "gemma3_text"
    assert record["lora"]["r"] == 8 and record["options"]["lr"] == 3e-3 and record["steps"] == 30
    assert record["hardware"]["device"] == "cpu" and record["train_s"] > 0 and record["tokens_per_s"] > 0
    assert (sft_run.adapter_dir / "adapter_model.safetensors").is_file() and sft_run.gguf is not None


@pytest.mark.slow
async def test_the_exported_adapter_is_served_and_answers_what_it_learned(sft_run: FinetuneResult, tiny_gemma3: Path) -> None:
    assert sft_run.gguf is not None
    for question, answer in FACTS:
        assert (await _answer(tiny_gemma3, sft_run.gguf, question)).strip() == answer
    # lora_scale = 0 is the random base model again, which knows none of it
    assert [await _answer(tiny_gemma3, sft_run.gguf, q, scale=0.0) for q, _ in FACTS] != [a for _, a in FACTS]


@pytest.mark.slow
def test_dpo_raises_the_chosen_over_rejected_margin(tiny_gemma3: Path, tmp_path: Path, one_thread: None) -> None:
    import torch
    from peft import PeftModel

    from aiestack.finetune.base import load_base

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q, "chosen": a, "rejected": w}) + "\n"
                             for (q, a), w in zip(FACTS, ["red", "pink", "grey", "gold"], strict=True)))
    result = dpo(pairs, model=str(tiny_gemma3), output_dir=tmp_path / "run", lora=LORA,
                 options=TrainOptions(max_steps=8, lr=3e-3, batch_size=4, beta=0.1))
    assert result.record["logs"][0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy = reference at step 1

    base = load_base(str(tiny_gemma3))
    tok = base.tokenizer
    model = PeftModel.from_pretrained(base.model, str(result.adapter_dir))

    def logp(prompt: str, answer: str) -> float:
        p = tok(prompt)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + a])
        with torch.no_grad():
            logits = model(ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
        return float(logits.gather(1, torch.tensor(a)[:, None]).sum())

    def margins() -> list[float]:
        rows = [json.loads(line) for line in pairs.read_text().splitlines()]
        return [logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in rows]

    after = margins()
    with model.disable_adapter():
        before = margins()
    assert all(a > b + 1.0 for a, b in zip(after, before, strict=True)), (before, after)


def test_dpo_needs_preference_pairs(tmp_path: Path) -> None:
    from aiestack.errors import ConfigError

    with pytest.raises(ConfigError, match="preference pairs"):
        dpo(_chat_file(tmp_path / "chat.jsonl"), model="unused", output_dir=tmp_path / "run",
            options=TrainOptions(device="cpu"))
