"""The GGUF LoRA export is exact: llama.cpp running the tiny Gemma 3 GGUF with the exported adapter gives the
logits of the PEFT model (base read from the same GGUF by transformers), at scale 1, 0 and in between."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")
pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from aiestack.errors import ConfigError  # noqa: E402
from aiestack.finetune import export_gguf_lora  # noqa: E402

TOKENS = [2, 10, 20, 30, 40, 50, 60, 5, 7, 9, 11, 13, 70, 80]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _llama_logits(gguf: Path, lora: Path | None = None, scale: float = 1.0) -> Any:
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=64, logits_all=True, verbose=False, n_threads=1,
                          lora_path=None if lora is None else str(lora), lora_scale=scale)
    try:
        llm.eval(TOKENS)
        return np.array(llm.scores[: len(TOKENS)])
    finally:
        llm.close()


@pytest.fixture(scope="module")
def adapted(tiny_gemma3: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, Any]:
    """A PEFT adapter with random A and B on every linear layer (rsLoRA, so the exporter must fold the
    scale), its GGUF export, and the HF logits with and without it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from aiestack.finetune.base import load_base

    tmp = tmp_path_factory.mktemp("lora")
    base = load_base(str(tiny_gemma3))
    torch.manual_seed(0)
    model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, use_rslora=True))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3)
    model.save_pretrained(str(tmp / "adapter"))
    gguf = export_gguf_lora(tmp / "adapter", tmp / "adapter.gguf", architecture="gemma3_text")
    with torch.no_grad():
        ids = torch.tensor([TOKENS])
        adapted_logits = model(ids).logits[0].numpy()
        with model.disable_adapter():
            base_logits = model(ids).logits[0].numpy()
    return tmp / "adapter", gguf, adapted_logits, base_logits


@pytest.mark.slow
def test_llama_cpp_with_the_exported_lora_matches_peft(adapted: tuple[Path, Path, Any, Any], tiny_gemma3: Path) -> None:
    import numpy as np

    _, gguf, hf_adapted, hf_base = adapted
    effect = np.abs(hf_adapted - hf_base).max()
    assert effect > 3  # the adapter changes the logits a lot ...
    base = _llama_logits(tiny_gemma3)
    assert np.abs(base - hf_base).max() < 0.02  # transformers and llama.cpp read the base GGUF alike
    full = _llama_logits(tiny_gemma3, gguf, 1.0)
    assert np.abs(full - hf_adapted).max() < 0.02  # ... and llama.cpp applies exactly PEFT's change
    assert (full.argmax(-1) == hf_adapted.argmax(-1)).all()
    assert np.abs(_llama_logits(tiny_gemma3, gguf, 0.0) - hf_base).max() < 0.02  # scale 0 is the base


def test_the_file_has_llama_cpps_names_shapes_and_keys(adapted: tuple[Path, Path, Any, Any]) -> None:
    import gguf as gg

    adapter_dir, path, _, _ = adapted
    reader = gg.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["general.architecture"].contents() == "gemma3"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}  # ggml order: ne0 (inner) first
    assert shapes["blk.0.attn_q.weight.lora_a"] == (64, 4)  # [d_in, r]
    assert shapes["blk.0.attn_q.weight.lora_b"] == (4, 512)  # [r, d_out]
    assert shapes["blk.5.ffn_down.weight.lora_a"] == (128, 4)
    assert len(shapes) == 6 * 7 * 2
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["use_rslora"] is True


def test_what_llama_cpp_cannot_apply_is_refused(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 4),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(4, 2)}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="not supported"):
        export_gguf_lora(adapter, tmp_path / "x.gguf", architecture="llama")  # q/k rows permuted by llama.cpp's converter
    with pytest.raises(ConfigError, match="which architecture"):
        export_gguf_lora(adapter, tmp_path / "x.gguf")
    save_file({"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(2, 4)}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="not a LoRA A/B"):
        export_gguf_lora(adapter, tmp_path / "x.gguf", architecture="gemma3")
    with pytest.raises(ConfigError, match="not a PEFT adapter"):
        export_gguf_lora(tmp_path, tmp_path / "x.gguf", architecture="gemma3")
