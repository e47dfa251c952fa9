"""A PEFT LoRA adapter as a llama.cpp GGUF LoRA (what llama.cpp's ``convert_lora_to_gguf.py`` writes).

The file has ``general.type = "adapter"``, ``general.architecture`` (the base model's llama.cpp
architecture: llama.cpp refuses an adapter of another one), ``adapter.type = "lora"`` and
``adapter.lora.alpha``, and for every adapted linear layer two tensors named after the base tensor:
``<name>.weight.lora_a`` holding PEFT's ``lora_A`` as it is (numpy shape ``(r, d_in)``, ggml
``ne = [d_in, r]``) and ``<name>.weight.lora_b`` holding ``lora_B`` (``(d_out, r)``). llama.cpp
checks those shapes against the base tensor and computes ``W x + scale · alpha / r · B (A x)``, where
``scale`` is the ``lora_scale`` it was given: so with ``alpha`` equal to PEFT's ``lora_alpha`` the
adapter at scale 1 is exactly PEFT's ``W + (alpha / r) B A``. When PEFT scales a layer otherwise
(rsLoRA's ``alpha / sqrt(r)``, per-layer ``alpha_pattern``/``rank_pattern``), the difference is folded
into that layer's ``lora_b``, so the effect is still exact.

Names follow llama.cpp's tensor map (``gguf.get_tensor_name_map``): ``model.layers.3.self_attn.q_proj``
becomes ``blk.3.attn_q``. Only architectures whose weights llama.cpp's converter stores unpermuted are
accepted (Gemma 2/3, Qwen 2/3): Llama-style models have their q/k rows permuted by the
converter, which this exporter does not reproduce, so it refuses them rather than write a wrong file.
Verified numerically for Gemma 3 (``tests/finetune/test_gguf_lora.py``: llama.cpp's logits with the
exported adapter equal the PEFT model's).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError

# transformers model_type → llama.cpp architecture, for the architectures exported without permutation.
ARCHITECTURES = {"gemma3_text": "gemma3", "gemma3": "gemma3", "gemma2": "gemma2", "qwen2": "qwen2", "qwen3": "qwen3"}


def read_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The adapter's ``adapter_config.json`` and its tensors (name → torch tensor)."""
    config_path, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise ConfigError(str(adapter_dir), "is not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)",
                          "pass the adapter/ folder a finetune run wrote")
    from safetensors.torch import load_file

    return json.loads(config_path.read_text(encoding="utf-8")), dict(load_file(str(weights)))


def lora_pairs(tensors: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{base module name: (A, B)}`` from PEFT tensor names (``...q_proj.lora_A.weight``)."""
    pairs: dict[str, list[Any]] = {}
    for name, tensor in tensors.items():
        for i, part in enumerate((".lora_A.weight", ".lora_B.weight")):
            if name.endswith(part):
                module = name[: -len(part)].removeprefix("base_model.model.")
                pairs.setdefault(module, [None, None])[i] = tensor
                break
        else:
            raise ConfigError(name, "is not a LoRA A/B matrix (embeddings, DoRA magnitudes and biases cannot go into a GGUF LoRA)",
                              "train with LoRA on linear layers only")
    missing = [m for m, (a, b) in pairs.items() if a is None or b is None]
    if missing:
        raise ConfigError(missing[0], "has only one of lora_A and lora_B", "re-save the adapter")
    return {m: (a, b) for m, (a, b) in pairs.items()}


def peft_scaling(config: dict[str, Any], module: str, rank: int) -> float:
    """The factor PEFT multiplies ``B A`` by for ``module``: ``alpha / r`` (or ``alpha / sqrt(r)`` with rsLoRA)."""
    alpha = float(config.get("lora_alpha", rank))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if module.endswith(pattern):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def export_gguf_lora(adapter_dir: str | Path, out: str | Path, *, architecture: str | None = None) -> Path:
    """Write the PEFT adapter in ``adapter_dir`` to ``out`` as a GGUF LoRA; return ``out``.

    ``architecture``: the base's transformers ``model_type`` (or llama.cpp name); by default read from
    ``adapter_config.json``'s ``aiestack_architecture``, which a finetune run writes.
    """
    import gguf
    import numpy as np

    adapter_dir, out = Path(adapter_dir), Path(out)
    config, tensors = read_adapter(adapter_dir)
    if config.get("use_dora"):
        raise ConfigError("use_dora", "llama.cpp applies plain LoRA only; a DoRA adapter cannot be exported", "train without DoRA")
    model_type = architecture or _architecture_of(adapter_dir)
    arch = ARCHITECTURES.get(model_type) or (model_type if model_type in ARCHITECTURES.values() else None)
    if arch is None:
        raise ConfigError(model_type or "architecture", "exporting a LoRA of this architecture to GGUF is not supported",
                          f"supported: {', '.join(sorted(set(ARCHITECTURES.values())))}")
    pairs = lora_pairs(tensors)
    n_blocks = 1 + max((_block(m) for m in pairs), default=0)
    names = gguf.get_tensor_name_map(_arch_enum(gguf, arch), n_blocks)
    alpha = float(config.get("lora_alpha", 0) or 0)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for module, (a, b) in sorted(pairs.items()):
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ConfigError(module, f"has no llama.cpp tensor in the {arch} architecture", "adapt only the attention and MLP projections")
        rank = int(a.shape[0])
        factor = peft_scaling(config, module, rank) / (alpha / rank if alpha else 1.0)
        a_np = a.detach().float().cpu().numpy().astype(np.float32)
        b_np = (b.detach().float().cpu().numpy() * factor).astype(np.float32)
        writer.add_tensor(target + ".lora_a", np.ascontiguousarray(a_np))
        writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b_np))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _architecture_of(adapter_dir: Path) -> str:
    meta = adapter_dir / "aiestack.json"
    if meta.is_file():
        return str(json.loads(meta.read_text(encoding="utf-8")).get("architecture", ""))
    raise ConfigError(str(adapter_dir), "does not say which architecture its base model has",
                      "pass --architecture (e.g. gemma3)")


def _block(module: str) -> int:
    parts = module.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return 0


def _arch_enum(gguf: Any, arch: str) -> Any:
    for value, name in gguf.MODEL_ARCH_NAMES.items():
        if name == arch:
            return value
    raise ConfigError(arch, "is not an architecture this gguf package knows", "upgrade gguf")
