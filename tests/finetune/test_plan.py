"""The finetuning plan's arithmetic, checked against published figures and the book's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiestack.cli.app import build_app
from aiestack.finetune.plan import (
    GIB,
    HARDWARE,
    KNOWN,
    Architecture,
    Setting,
    architecture,
    inference_bytes,
    plan,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "published"),
    [("gemma-3-270m", 268e6), ("llama-3.1-8b", 8.03e9), ("llama-3.1-70b", 70.6e9), ("mistral-7b", 7.24e9),
     ("llama-3.2-1b", 1.24e9), ("qwen2.5-0.5b", 0.494e9)],
)
def test_parameter_counts_match_the_published_ones(name: str, published: float) -> None:
    assert KNOWN[name].parameters == pytest.approx(published, rel=0.01)


def test_lora_trainable_parameters_match_peft() -> None:
    # PEFT reports 41,943,040 trainable parameters for Llama 3.1 8B, r = 16 on every linear layer.
    assert plan(KNOWN["llama-3.1-8b"], Setting(method="lora", rank=16)).trainable == 41_943_040
    only_attention = plan(KNOWN["llama-3.1-8b"], Setting(method="lora", rank=8, targets=("q_proj", "v_proj")))
    assert only_attention.trainable == 32 * 8 * ((4096 + 4096) + (4096 + 1024))  # 3,407,872


def test_full_finetuning_with_adamw_costs_sixteen_bytes_a_parameter_before_activations() -> None:
    arch = KNOWN["llama-3.1-8b"]
    mixed = plan(arch, Setting(method="full", weights="bf16", compute="bf16", tokens=10**9))
    n = arch.parameters
    assert mixed.bytes["weights"] == 2 * n and mixed.bytes["gradients"] == 2 * n
    assert mixed.bytes["optimizer"] == 12 * n  # two fp32 moments + the fp32 master copy
    assert mixed.flops == 6 * n * 10**9
    fp32 = plan(arch, Setting(method="full", weights="fp32", compute="fp32"))
    assert fp32.bytes["optimizer"] == 8 * n and fp32.bytes["weights"] + fp32.bytes["gradients"] == 8 * n
    assert plan(arch, Setting(method="full", optimizer="adamw8bit")).bytes["optimizer"] == 6 * n


def test_qlora_stores_the_base_weights_in_four_bits() -> None:
    arch = KNOWN["llama-3.1-8b"]
    lora = plan(arch, Setting(method="lora", batch=1, seq_len=2048, checkpointing=True))
    qlora = plan(arch, Setting(method="qlora", batch=1, seq_len=2048, checkpointing=True))
    assert qlora.bytes["weights"] < lora.bytes["weights"] / 3.5 and qlora.trainable == lora.trainable
    assert qlora.total / GIB == pytest.approx(5.5, abs=0.6)  # "an 8B model fine-tunes in ~6 GB with QLoRA"


def test_activations_follow_korthikanti_and_checkpointing_keeps_only_layer_inputs() -> None:
    arch = KNOWN["gemma-3-270m"]
    s, b, h, a = 512, 4, arch.hidden, arch.heads
    logits = 2 * s * b * arch.vocab
    full = plan(arch, Setting(batch=b, seq_len=s)).bytes["activations"]
    assert full == pytest.approx(arch.layers * s * b * h * (34 + 5 * a * s / h) + logits)
    kept = plan(arch, Setting(batch=b, seq_len=s, checkpointing=True, tokens=1000))
    assert kept.bytes["activations"] == pytest.approx(arch.layers * 2 * s * b * h + logits)
    assert logits > kept.bytes["activations"] / 2  # Gemma's 262k vocabulary: the logits dominate
    assert kept.flops == (4 + 2) * arch.parameters * 1000  # LoRA 4NT + one more forward pass


def test_bad_settings_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="full finetuning trains the weights"):
        plan(KNOWN["gemma-3-270m"], Setting(method="full", weights="nf4"))
    with pytest.raises(ValueError, match="unknown LoRA target"):
        plan(KNOWN["gemma-3-270m"], Setting(targets=("c_attn",)))
    with pytest.raises(KeyError, match="unknown model"):
        architecture("gpt-5")
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10}), encoding="utf-8")
    with pytest.raises(ValueError, match="lacks what the plan needs"):
        architecture(str(tmp_path))


def test_a_hugging_face_config_gives_the_same_architecture(tmp_path: Path) -> None:
    config = {"text_config": {"vocab_size": 262144, "hidden_size": 640, "num_hidden_layers": 18, "num_attention_heads": 4,
                              "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048,
                              "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True}}
    (tmp_path / "gemma").mkdir()
    (tmp_path / "gemma" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    read = architecture(str(tmp_path / "gemma"))
    assert isinstance(read, Architecture) and read.parameters == KNOWN["gemma-3-270m"].parameters
    assert inference_bytes(read) == pytest.approx(read.parameters * 2 * 1.2)


def test_the_cli_compares_the_three_methods() -> None:
    result = CliRunner().invoke(build_app(), ["finetune", "plan", "llama-3.1-8b", "--batch", "1", "--seq-len", "2048",
                                              "--checkpointing", "--tokens", "1e8"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["full"], ["lora"], ["qlora"])}
    assert set(lines) == {"full", "lora", "qlora"} and lines["lora"][1] == "41.9M"
    assert float(lines["full"][-2].replace(",", "")) > 100 > float(lines["lora"][-2]) > float(lines["qlora"][-2])
    as_json = json.loads(CliRunner().invoke(build_app(), ["finetune", "plan", "gemma-3-270m", "--method", "qlora", "--json"]).stdout)
    assert as_json[0]["method"] == "qlora" and as_json[0]["trainable"] == plan(KNOWN["gemma-3-270m"], Setting()).trainable
    bad = CliRunner().invoke(build_app(), ["finetune", "plan", "gpt-5"])
    assert bad.exit_code == 2 and "unknown model" in bad.output
    assert "h100" in HARDWARE
