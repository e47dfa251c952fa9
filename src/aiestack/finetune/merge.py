"""Model merging of LoRA adapters trained on the same base: linear, TIES and SLERP (book ch. 7, "Model Merging").

Each adapter changes a linear layer's weight by its *task vector* ``ΔW = (alpha / r) · B A``. Merging
combines the task vectors of several adapters, layer by layer:

- ``linear``: ``Σ wᵢ ΔWᵢ`` (task arithmetic; weights default to 1/n, an average). This one is exact as
  a LoRA: the merged adapter stacks the inputs' ranks (``A = [w₁s₁A₁; w₂s₂A₂]``, ``B = [B₁ B₂]``), so its
  rank is the sum of theirs and nothing is approximated.
- ``ties`` (Yadav et al., 2023, "TIES-Merging"): *trim* each task vector to its ``density`` fraction of
  largest-magnitude entries, *elect* a sign per entry (the sign of the weighted sum of the trimmed
  vectors), and *merge disjointly*: the weighted mean of the trimmed entries that agree with the elected
  sign (entries that disagree are dropped, which is what reduces interference), times ``scale``.
- ``slerp``: spherical interpolation of two task vectors (flattened) at ``t``: ``sin((1-t)θ)/sin θ · a +
  sin(tθ)/sin θ · b`` with ``θ`` the angle between them; nearly parallel vectors fall back to linear
  interpolation.

TIES and SLERP produce a dense ΔW per layer; it is factorised back into a LoRA by a truncated SVD to
``rank`` (default: the sum of the inputs' ranks), and the relative error of that truncation is reported
per layer (0 when the rank holds it exactly). The merged adapter is a PEFT adapter folder (with scale 1:
``lora_alpha = r``) that ``finetune export`` turns into a GGUF LoRA.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiestack.errors import ConfigError
from aiestack.finetune.gguf_lora import lora_pairs, peft_scaling, read_adapter

MergeMethod = Literal["linear", "ties", "slerp"]
MERGE_METHODS: tuple[MergeMethod, ...] = ("linear", "ties", "slerp")


def linear(deltas: Sequence[Any], weights: Sequence[float]) -> Any:
    """``Σ wᵢ ΔWᵢ``."""
    return sum(w * d for w, d in zip(weights, deltas, strict=True))


def trim(delta: Any, density: float) -> Any:
    """``delta`` with all but its ``density`` fraction of largest-magnitude entries set to 0."""
    import torch

    keep = max(1, round(density * delta.numel())) if density > 0 else 0
    if keep >= delta.numel():
        return delta.clone()
    out = torch.zeros_like(delta)
    if keep == 0:
        return out
    flat = delta.flatten()
    idx = torch.topk(flat.abs(), keep, sorted=False).indices
    out.view(-1)[idx] = flat[idx]
    return out


def ties(deltas: Sequence[Any], weights: Sequence[float], density: float = 0.5, scale: float = 1.0) -> Any:
    """TIES-merging of task vectors (trim, elect sign, disjoint weighted mean), times ``scale``."""
    import torch

    trimmed = torch.stack([trim(d, density) for d in deltas])
    w = torch.tensor(list(weights), dtype=trimmed.dtype).view(-1, *([1] * (trimmed.dim() - 1)))
    elected = torch.sign((w * trimmed).sum(0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    num = (w * trimmed * agree).sum(0)
    den = (w * agree).sum(0)
    return scale * torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


def slerp(a: Any, b: Any, t: float, *, eps: float = 1e-8, parallel: float = 0.9995) -> Any:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1) along the angle between them."""
    import torch

    va, vb = a.flatten().double(), b.flatten().double()
    na, nb = va.norm(), vb.norm()
    if na < eps or nb < eps:
        return ((1 - t) * va + t * vb).view_as(a).to(a.dtype)
    dot = torch.clamp((va / na) @ (vb / nb), -1.0, 1.0)
    if abs(float(dot)) > parallel:
        out = (1 - t) * va + t * vb
    else:
        theta = torch.arccos(dot)
        out = (torch.sin((1 - t) * theta) * va + torch.sin(t * theta) * vb) / torch.sin(theta)
    return out.view_as(a).to(a.dtype)


def factorise(delta: Any, rank: int) -> tuple[Any, Any, float]:
    """``(A, B, relative error)`` with ``B @ A`` the best rank-``rank`` approximation of ``delta``."""
    import torch

    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    r = min(rank, s.numel())
    b = (u[:, :r] * s[:r]).to(delta.dtype)
    a = vh[:r].to(delta.dtype)
    total = float(s.pow(2).sum())
    err = math.sqrt(float(s[r:].pow(2).sum()) / total) if total > 0 else 0.0
    return a.contiguous(), b.contiguous(), err


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged adapter folder, its rank, and the SVD truncation error per layer (TIES, SLERP)."""

    output_dir: Path
    method: MergeMethod
    rank: int
    modules: int
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)


def merge_adapters(adapters: Sequence[str | Path], output_dir: str | Path, *, method: MergeMethod = "linear",
                   weights: Sequence[float] | None = None, density: float = 0.5, scale: float = 1.0, t: float = 0.5,
                   rank: int | None = None) -> MergeResult:
    """Merge PEFT adapters of one base model into a new adapter folder (see the module docstring)."""
    import torch

    paths = [Path(p) for p in adapters]
    _check(method, paths, weights, density, t)
    loaded = [read_adapter(p) for p in paths]
    ws = list(weights) if weights is not None else ([1.0 / len(paths)] * len(paths) if method != "slerp" else [1.0, 1.0])
    scaled: list[dict[str, tuple[Any, Any]]] = []  # module → (s·A, B): ΔW = B @ (s·A)
    for config, tensors in loaded:
        pairs = lora_pairs(tensors)
        scaled.append({m: (peft_scaling(config, m, int(a.shape[0])) * a.float(), b.float()) for m, (a, b) in pairs.items()})
    modules = sorted(set().union(*scaled))
    out_rank = rank or sum(max((int(a.shape[0]) for a, _ in s.values()), default=0) for s in scaled)
    tensors_out: dict[str, Any] = {}
    errors: dict[str, float] = {}
    for module in modules:
        present = [(w, s[module]) for w, s in zip(ws, scaled, strict=True) if module in s]
        shapes = {(b.shape[0], a.shape[1]) for _, (a, b) in present}
        if len(shapes) != 1:
            raise ConfigError(module, f"has different shapes in the adapters ({sorted(shapes)})", "merge adapters of the same base model")
        if method == "linear" and rank is None:
            a = torch.cat([w * a for w, (a, _) in present], 0)
            b = torch.cat([b for _, (_, b) in present], 1)
        else:
            d_out, d_in = next(iter(shapes))
            deltas = [s[module][1] @ s[module][0] if module in s else torch.zeros(d_out, d_in) for s in scaled]
            if method == "linear":
                dense = linear(deltas, ws)
            elif method == "ties":
                dense = ties(deltas, ws, density, scale)
            else:
                dense = slerp(deltas[0], deltas[1], t)
            a, b, errors[module] = factorise(dense, out_rank)
        tensors_out[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        tensors_out[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    merged_rank = max(int(t_.shape[0]) for k, t_ in tensors_out.items() if k.endswith("lora_A.weight"))
    tensors_out = _pad_ranks(tensors_out, merged_rank)
    return _write(paths, loaded[0][0], Path(output_dir), tensors_out, merged_rank, modules, method, errors,
                  {"weights": ws, "density": density, "scale": scale, "t": t})


def _check(method: str, paths: list[Path], weights: Sequence[float] | None, density: float, t: float) -> None:
    if method not in MERGE_METHODS:
        raise ConfigError("--method", f"unknown merge method {method!r}", f"use one of {', '.join(MERGE_METHODS)}")
    if len(paths) < 2:
        raise ConfigError("adapters", "merging needs at least two adapters", "name two or more adapter folders")
    if method == "slerp" and len(paths) != 2:
        raise ConfigError("adapters", "SLERP interpolates between exactly two adapters", "name two, or use linear or ties")
    if weights is not None and len(weights) != len(paths):
        raise ConfigError("--weights", f"{len(weights)} weights for {len(paths)} adapters", "give one weight per adapter")
    if not 0 < density <= 1:
        raise ConfigError("--density", "must be in (0, 1]", "e.g. 0.5 keeps the larger half of each task vector")
    if not 0 <= t <= 1:
        raise ConfigError("-t", "must be in [0, 1]", "0 is the first adapter, 1 the second")
    arches = {json.loads((p / "aiestack.json").read_text()).get("base_model") for p in paths if (p / "aiestack.json").is_file()}
    if len(arches) > 1:
        raise ConfigError("adapters", f"were trained on different base models ({', '.join(map(str, arches))})",
                          "merge adapters of one base model")


def _pad_ranks(tensors: dict[str, Any], rank: int) -> dict[str, Any]:
    """Zero-pad every layer's A and B to one rank (PEFT and llama.cpp read one ``r`` per adapter file)."""
    import torch

    out = {}
    for name, tensor in tensors.items():
        if name.endswith("lora_A.weight") and tensor.shape[0] < rank:
            tensor = torch.cat([tensor, torch.zeros(rank - tensor.shape[0], tensor.shape[1])], 0)
        elif name.endswith("lora_B.weight") and tensor.shape[1] < rank:
            tensor = torch.cat([tensor, torch.zeros(tensor.shape[0], rank - tensor.shape[1])], 1)
        out[name] = tensor.contiguous()
    return out


def _write(paths: list[Path], first_config: dict[str, Any], out: Path, tensors: dict[str, Any], rank: int, modules: list[str],
           method: MergeMethod, errors: dict[str, float], params: dict[str, Any]) -> MergeResult:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in first_config.items() if k not in ("alpha_pattern", "rank_pattern", "use_rslora", "use_dora")}
    config.update(r=rank, lora_alpha=rank, target_modules=sorted({m.rsplit(".", 1)[-1] for m in modules}), lora_dropout=0.0)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, str(out / "adapter_model.safetensors"))
    meta_path = paths[0] / "aiestack.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["merge"] = {"method": method, "adapters": [str(p) for p in paths], **params,
                     "max_svd_error": max(errors.values(), default=0.0)}
    (out / "aiestack.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return MergeResult(out, method, rank, len(modules), errors)
