"""The memory and compute arithmetic of finetuning (AI Engineering, ch. 7, "Memory Math").

For a model architecture and a setting (method, precisions, batch, sequence length) it counts, in bytes:

- **weights**: parameters × bytes per parameter of the weights' precision (QLoRA: 4-bit NF4, plus the
  quantisation constants: 0.5 bytes + 0.127 bits per parameter with double quantisation);
- **trainable parameters**: all of them (full), or the adapters (LoRA/QLoRA: r × (d_in + d_out) per
  adapted linear layer);
- **gradients**: one per trainable parameter, in the training precision;
- **optimizer states**: AdamW keeps two per trainable parameter (first and second moments) in fp32,
  plus an fp32 master copy of the trainable weights when they are trained in 16 bits (mixed precision);
  SGD with momentum one; 8-bit Adam two in one byte each;
- **activations** saved for the backward pass (Korthikanti et al., 2022, for 16-bit activations):
  ``s·b·h·(34 + 5·a·s/h)`` bytes per layer without recomputation, ``2·s·b·h`` with full activation
  checkpointing (only each layer's input is kept, and recomputed), plus the logits ``2·s·b·V`` (often
  the largest single term for a large vocabulary: Gemma 3's is 262k).

Compute: training takes about ``6·N·T`` FLOPs for full finetuning (N parameters, T tokens: forward
2NT, backward 4NT) and about ``4·N·T`` for LoRA (no gradient for the frozen weights, but the backward
pass still goes through them); activation checkpointing adds one forward pass (``2·N·T``). Time is
FLOPs over (peak FLOP/s × MFU).

Every figure is an estimate of the dominant terms, as in the book: frameworks add buffers, fragmentation
and CUDA context (often 1–2 GB); the plan says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Method = Literal["full", "lora", "qlora"]
Precision = Literal["fp32", "bf16", "fp16", "int8", "nf4"]
Optimizer = Literal["adamw", "adamw8bit", "sgd"]

BYTES: Mapping[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": 0.5 + 0.127 / 8}
GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Architecture:
    """What the arithmetic needs of a decoder-only transformer (Hugging Face config names in comments)."""

    name: str
    vocab: int  # vocab_size
    hidden: int  # hidden_size
    layers: int  # num_hidden_layers
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int  # head_dim (hidden / heads when absent)
    intermediate: int  # intermediate_size
    gated_mlp: bool = True  # SwiGLU / GeGLU: three projections
    tied_embeddings: bool = True  # tie_word_embeddings

    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear layer of one block, by the usual module names."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv), "o_proj": (q, self.hidden)}
        if self.gated_mlp:
            shapes["gate_proj"] = (self.hidden, self.intermediate)
        shapes["up_proj"] = (self.hidden, self.intermediate)
        shapes["down_proj"] = (self.intermediate, self.hidden)
        return shapes

    @property
    def parameters(self) -> int:
        block = sum(i * o for i, o in self.linear_shapes.values()) + 4 * self.hidden  # + norms
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.layers * block + self.hidden

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str = "custom") -> Architecture:
        """From a Hugging Face ``config.json`` (a multimodal one's ``text_config`` is used)."""
        cfg = config.get("text_config", config)
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(
                name=name, vocab=int(cfg["vocab_size"]), hidden=hidden, layers=int(cfg["num_hidden_layers"]), heads=heads,
                kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=int(cfg.get("head_dim") or hidden // heads),
                intermediate=int(cfg["intermediate_size"]),
                gated_mlp=str(cfg.get("hidden_act", cfg.get("hidden_activation", "silu"))) not in ("gelu", "relu", "gelu_new"),
                tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the config lacks what the plan needs ({exc}): vocab_size, hidden_size, num_hidden_layers, "
                             "num_attention_heads, intermediate_size") from None


#: Architectures from their published configs (Hugging Face ``config.json``).
KNOWN: Mapping[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("gemma-3-270m", 262_144, 640, 18, 4, 1, 256, 2048),
        Architecture("gemma-3-1b", 262_144, 1152, 26, 4, 1, 256, 6912),
        Architecture("qwen2.5-0.5b", 151_936, 896, 24, 14, 2, 64, 4864),
        Architecture("qwen2.5-7b", 152_064, 3584, 28, 28, 4, 128, 18_944, tied_embeddings=False),
        Architecture("llama-3.2-1b", 128_256, 2048, 16, 32, 8, 64, 8192),
        Architecture("llama-3.1-8b", 128_256, 4096, 32, 32, 8, 128, 14_336, tied_embeddings=False),
        Architecture("llama-3.1-70b", 128_256, 8192, 80, 64, 8, 128, 28_672, tied_embeddings=False),
        Architecture("mistral-7b", 32_768, 4096, 32, 32, 8, 128, 14_336, tied_embeddings=False),
    )
}
#: Dense 16-bit peak FLOP/s of accelerators (vendor datasheets, without sparsity).
HARDWARE: Mapping[str, float] = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l4": 121e12, "a10g": 125e12, "t4": 65e12}


def architecture(name_or_path: str) -> Architecture:
    """A known architecture by name, or one read from a ``config.json`` path."""
    if name_or_path in KNOWN:
        return KNOWN[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.is_file():
        return Architecture.from_hf_config(json.loads(path.read_text(encoding="utf-8")), name=path.parent.name or path.stem)
    raise KeyError(f"unknown model {name_or_path!r}: use one of {', '.join(KNOWN)} or a Hugging Face config.json path")


@dataclass(frozen=True, slots=True)
class Setting:
    method: Method = "lora"
    weights: Precision = "bf16"  # of the frozen (LoRA) or trained (full) weights; QLoRA: nf4
    compute: Precision = "bf16"  # of activations and gradients
    optimizer: Optimizer = "adamw"
    rank: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    batch: int = 8
    seq_len: int = 1024
    checkpointing: bool = False
    tokens: int = 0  # training tokens (examples × their length × epochs), for the compute estimate


@dataclass(frozen=True, slots=True)
class Plan:
    arch: Architecture
    setting: Setting
    parameters: int
    trainable: int
    bytes: Mapping[str, float] = field(default_factory=dict)
    flops: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.bytes.values())

    def hours(self, peak_flops: float, mfu: float = 0.4) -> float:
        return self.flops / (peak_flops * mfu) / 3600


def plan(arch: Architecture, setting: Setting) -> Plan:
    if setting.method == "qlora" and setting.weights != "nf4":
        setting = Setting(**{**_asdict(setting), "weights": "nf4"})
    if setting.method == "full" and setting.weights in ("nf4", "int8"):
        raise ValueError("full finetuning trains the weights themselves: use fp32, bf16 or fp16 weights (or --method qlora)")
    n = arch.parameters
    if setting.method == "full":
        trainable = n
    else:
        shapes = arch.linear_shapes
        unknown = [t for t in setting.targets if t not in shapes]
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {', '.join(unknown)}; this architecture has {', '.join(shapes)}")
        trainable = arch.layers * sum(setting.rank * (shapes[t][0] + shapes[t][1]) for t in setting.targets)
    compute = BYTES[setting.compute]
    # The trained parameters live in the weights' precision (full) or the compute precision (adapters);
    # in 16 bits, mixed precision keeps an fp32 master copy for the optimizer to update.
    held = BYTES[setting.weights] if setting.method == "full" else compute
    weights = n * BYTES[setting.weights] + (trainable * held if setting.method != "full" else 0)
    gradients = trainable * held
    per_state = {"adamw": 2 * 4.0, "adamw8bit": 2 * 1.0, "sgd": 4.0}[setting.optimizer]
    optimizer = trainable * (per_state + (4.0 if held < 4 else 0.0))
    s, b, h, a = setting.seq_len, setting.batch, arch.hidden, arch.heads
    per_layer = 2 * s * b * h if setting.checkpointing else s * b * h * (34 + 5 * a * s / h)
    activations = arch.layers * per_layer * (compute / 2) + 2 * s * b * arch.vocab * (compute / 2)
    passes = 6 if setting.method == "full" else 4
    flops = (passes + (2 if setting.checkpointing else 0)) * n * setting.tokens
    return Plan(arch, setting, n, trainable,
                {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations}, flops)


def _asdict(setting: Setting) -> dict[str, Any]:
    return {f: getattr(setting, f) for f in setting.__dataclass_fields__}


def inference_bytes(arch: Architecture, precision: Precision = "bf16") -> float:
    """The book's rule of thumb for serving: weights × 1.2 (the 20% for the KV cache and buffers)."""
    return arch.parameters * BYTES[precision] * 1.2
