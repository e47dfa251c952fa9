"""Merging LoRA adapters: linear, TIES and SLERP on small tensors with answers worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from aiestack.errors import ConfigError  # noqa: E402
from aiestack.finetune.merge import factorise, merge_adapters, slerp, ties, trim  # noqa: E402

T = torch.tensor


def test_trim_keeps_the_largest_magnitudes() -> None:
    assert trim(T([3.0, -1.0, 2.0, -4.0]), 0.5).tolist() == [3.0, 0.0, 0.0, -4.0]
    assert trim(T([3.0, -1.0]), 1.0).tolist() == [3.0, -1.0]


def test_ties_trims_elects_a_sign_and_averages_the_agreeing() -> None:
    a = T([4.0, -3.0, 1.0, 2.0])
    b = T([2.0, 5.0, -6.0, 0.1])
    # density 0.5 → a keeps 4, -3; b keeps 5, -6.
    # signs: e0 = +(4+2→ only a:4) , e1 = sign(-3 + 5) = +, e2 = sign(-6) = −, e3 = 0 (nothing kept)
    # e0: only a kept (4) → 4; e1: agreeing with + is b's 5 → 5; e2: b's -6 → -6; e3: 0
    assert ties([a, b], [1.0, 1.0], density=0.5).tolist() == [4.0, 5.0, -6.0, 0.0]
    # full density: e0 mean(4, 2) = 3; e1 sign(2) = + → 5; e2 sign(-5) = − → -6; e3 mean(2, 0.1) = 1.05
    assert ties([a, b], [1.0, 1.0], density=1.0).tolist() == pytest.approx([3.0, 5.0, -6.0, 1.05])
    # weights: e0 (3·4 + 1·2) / 4 = 3.5, times scale 2
    assert ties([a, b], [3.0, 1.0], density=1.0, scale=2.0)[0].item() == pytest.approx(7.0)


def test_slerp_follows_the_arc() -> None:
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    assert slerp(a, b, 0.5).tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)])  # lerp would give 0.5, 0.5
    assert slerp(a, b, 0.0).tolist() == pytest.approx([1.0, 0.0])
    assert slerp(a, b, 1.0).tolist() == pytest.approx([0.0, 1.0])
    assert slerp(a, b, 1 / 3).tolist() == pytest.approx([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    assert slerp(T([1.0, 0.0]), T([3.0, 0.0]), 0.5).tolist() == pytest.approx([2.0, 0.0])  # parallel: linear


def test_factorise_is_exact_at_full_rank_and_reports_the_truncation() -> None:
    torch.manual_seed(0)
    delta = torch.randn(6, 2) @ torch.randn(2, 5)
    a, b, err = factorise(delta, 2)
    assert torch.allclose(b @ a, delta, atol=1e-5) and err < 1e-6
    diag = torch.diag(T([3.0, 4.0]))
    a, b, err = factorise(diag, 1)
    assert err == pytest.approx(3 / 5)  # the dropped singular value 3 of sqrt(9 + 16) = 5
    assert (b @ a).flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 4.0])


def _adapter(path: Path, a: torch.Tensor, b: torch.Tensor, alpha: float, base: str = "tiny") -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": a.shape[0], "lora_alpha": alpha, "target_modules": ["q_proj"]}))
    (path / "aiestack.json").write_text(json.dumps({"architecture": "gemma3_text", "base_model": base}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a.contiguous(),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b.contiguous()}, str(path / "adapter_model.safetensors"))
    return path


def _delta(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    from aiestack.finetune.gguf_lora import peft_scaling

    config = json.loads((path / "adapter_config.json").read_text())
    t = load_file(str(path / "adapter_model.safetensors"))
    a = t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    return peft_scaling(config, "q", a.shape[0]) * (b @ a)


def test_merging_adapter_folders(tmp_path: Path) -> None:
    torch.manual_seed(1)
    one = _adapter(tmp_path / "one", torch.randn(2, 5), torch.randn(4, 2), alpha=4)  # scale 2
    two = _adapter(tmp_path / "two", torch.randn(3, 5), torch.randn(4, 3), alpha=3)  # scale 1
    d1, d2 = _delta(one), _delta(two)

    lin = merge_adapters([one, two], tmp_path / "lin", method="linear", weights=[0.7, 0.3])
    assert lin.rank == 5 and not lin.errors  # stacked ranks: exact, no SVD
    assert torch.allclose(_delta(lin.output_dir), 0.7 * d1 + 0.3 * d2, atol=1e-5)

    tied = merge_adapters([one, two], tmp_path / "ties", method="ties", density=0.5)
    assert tied.max_error < 1e-6  # rank 5 holds a 4 × 5 matrix exactly
    assert torch.allclose(_delta(tied.output_dir), ties([d1, d2], [0.5, 0.5], 0.5), atol=1e-5)

    arc = merge_adapters([one, two], tmp_path / "slerp", method="slerp", t=0.25)
    assert torch.allclose(_delta(arc.output_dir), slerp(d1, d2, 0.25), atol=1e-5)
    meta = json.loads((arc.output_dir / "aiestack.json").read_text())
    assert meta["architecture"] == "gemma3_text" and meta["merge"]["method"] == "slerp"

    low = merge_adapters([one, two], tmp_path / "low", method="ties", rank=1)
    assert low.rank == 1 and 0 < low.max_error < 1


def test_bad_merges_say_what_to_do(tmp_path: Path) -> None:
    one = _adapter(tmp_path / "one", torch.ones(1, 3), torch.ones(2, 1), alpha=1)
    two = _adapter(tmp_path / "two", torch.ones(1, 3), torch.ones(2, 1), alpha=1)
    other = _adapter(tmp_path / "other", torch.ones(1, 3), torch.ones(2, 1), alpha=1, base="another")
    with pytest.raises(ConfigError, match="exactly two"):
        merge_adapters([one, two, two], tmp_path / "x", method="slerp")
    with pytest.raises(ConfigError, match="different base models"):
        merge_adapters([one, other], tmp_path / "x")
    with pytest.raises(ConfigError, match="one weight per adapter"):
        merge_adapters([one, two], tmp_path / "x", weights=[1.0])
    with pytest.raises(ConfigError, match="at least two"):
        merge_adapters([one], tmp_path / "x")
