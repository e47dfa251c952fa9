"""LoRA supervised finetuning (SFT) and direct preference optimisation (DPO) with PEFT and TRL.

One run: load the data (:mod:`aiestack.finetune.data`), load the base model (:mod:`aiestack.finetune.base`),
wrap it in a LoRA adapter (PEFT), train with TRL's ``SFTTrainer`` (loss on the completion only) or
``DPOTrainer`` (the reference model is the base with the adapter switched off), save the adapter, export it
as a llama.cpp GGUF LoRA when the base was a GGUF (:mod:`aiestack.finetune.gguf_lora`), and write the run
record ``run.json``: the dataset version and its content hash, the base model, every hyper-parameter, the
loss at every step, wall time, tokens per second and the hardware.

On the CPU a run is stopped at ``budget_minutes`` (10 by default) so that a run on a laptop stays small;
the record says when that happened. A GPU is used when torch sees one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiestack.errors import ConfigError
from aiestack.finetune.base import BaseModel, hardware, load_base, pick_device
from aiestack.finetune.data import (
    Renderer,
    TrainingData,
    chat_template,
    dpo_texts,
    load_training_data,
    sft_texts,
)
from aiestack.models.llama_prompt import ChatFormat
from aiestack.native_output import quiet_native_output
from aiestack.stores.datasets import DatasetStore

Method = Literal["sft", "dpo"]
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CPU_BUDGET_MINUTES = 10.0
Progress = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class LoraOptions:
    """The adapter: rank ``r``, scale ``alpha / r``, dropout, and the linear layers it adapts."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_TARGETS


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """How long and how fast to train. ``max_steps`` (> 0) overrides ``epochs``."""

    epochs: float = 1.0
    max_steps: int = -1
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    seed: int = 0
    device: str = "auto"
    beta: float = 0.1  # DPO: strength of the KL anchor to the reference model
    chat_format: ChatFormat = "auto"  # as the llama_cpp provider renders prompts
    instruct: bool = False
    budget_minutes: float | None = None  # None: CPU_BUDGET_MINUTES on the CPU, no limit on a GPU
    warmup_steps: int = 0
    checkpointing: bool = False  # activation checkpointing: less memory, one more forward pass per step


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    """What a run produced: the adapter folder, its GGUF export (if any) and the run record."""

    method: Method
    output_dir: Path
    adapter_dir: Path
    gguf: Path | None
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [float(x) for x in self.record.get("losses", [])]

    @property
    def record_path(self) -> Path:
        return self.output_dir / "run.json"


def sft(data: str | Path | TrainingData, *, model: str = "embedded", output_dir: str | Path,
        lora: LoraOptions | None = None, options: TrainOptions | None = None, store: DatasetStore | None = None,
        export_gguf: bool | None = None, progress: Progress | None = None) -> FinetuneResult:
    """LoRA SFT of ``model`` on ``data`` (a file, a ``NAME[@VERSION]`` in ``store``, or loaded rows)."""
    return _run("sft", data, model, Path(output_dir), lora or LoraOptions(), options or TrainOptions(), store, export_gguf, progress)


def dpo(data: str | Path | TrainingData, *, model: str = "embedded", output_dir: str | Path,
        lora: LoraOptions | None = None, options: TrainOptions | None = None, store: DatasetStore | None = None,
        export_gguf: bool | None = None, progress: Progress | None = None) -> FinetuneResult:
    """LoRA DPO of ``model`` on the preference pairs of ``data``."""
    return _run("dpo", data, model, Path(output_dir), lora or LoraOptions(), options or TrainOptions(), store, export_gguf, progress)


def _run(method: Method, data: str | Path | TrainingData, model: str, out: Path, lora: LoraOptions, opts: TrainOptions,
         store: DatasetStore | None, export_gguf: bool | None, progress: Progress | None) -> FinetuneResult:
    _check(lora, opts)
    rows = data if isinstance(data, TrainingData) else load_training_data(data, store=store)
    if not rows.rows:
        raise ConfigError(rows.id, "the dataset has no rows", "build a dataset with rows first")
    if method == "dpo":
        dpo_texts(TrainingData(rows.kind, rows.rows[:1], rows.source), Renderer())  # a chat dataset fails here, before the model loads
    device = pick_device(opts.device)
    budget = opts.budget_minutes if opts.budget_minutes is not None else (CPU_BUDGET_MINUTES if device == "cpu" else None)
    started = time.perf_counter()
    base = load_base(model, device=device)
    loaded_s = time.perf_counter() - started
    renderer = _renderer(base, opts)
    texts = sft_texts(rows, renderer) if method == "sft" else dpo_texts(rows, renderer)
    out.mkdir(parents=True, exist_ok=True)
    adapter_dir = out / "adapter"
    clock = _Clock(budget, progress)
    trainer = _trainer(method, base, texts, out, lora, opts, device, clock)
    train_started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_started
    with warnings.catch_warnings():  # a GGUF base has no config.json beside it; the vocabulary is the GGUF's own
        warnings.filterwarnings("ignore", message="Could not find a config file in", category=UserWarning)
        trainer.model.save_pretrained(str(adapter_dir))
    (adapter_dir / "aiestack.json").write_text(json.dumps({"architecture": base.architecture, "base_model": model,
                                                           "gguf": str(base.gguf) if base.gguf else None}) + "\n", encoding="utf-8")
    tokens = _tokens(base, texts, opts.max_length, clock.steps, opts)
    record: dict[str, Any] = {
        "method": method, "dataset": dict(rows.source), "base_model": {"name": model, "gguf": str(base.gguf) if base.gguf else None,
                                                                      "architecture": base.architecture, "parameters": base.parameters},
        "lora": {**asdict(lora), "targets": list(lora.targets)}, "options": asdict(opts),
        "trainable_parameters": int(sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)),
        "examples": len(texts), "steps": clock.steps, "losses": clock.losses, "logs": clock.logs,
        "stopped_by_budget": clock.stopped, "budget_minutes": budget,
        "load_s": round(loaded_s, 2), "train_s": round(train_s, 2), "train_tokens": tokens,
        "tokens_per_s": round(tokens / train_s, 2) if train_s > 0 else None, "hardware": hardware(device),
    }
    gguf = None
    if export_gguf if export_gguf is not None else base.gguf is not None:
        from aiestack.finetune.gguf_lora import export_gguf_lora

        gguf = export_gguf_lora(adapter_dir, out / "adapter.gguf", architecture=base.architecture)
        record["gguf"] = str(gguf)
    record["wall_s"] = round(time.perf_counter() - started, 2)
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return FinetuneResult(method, out, adapter_dir, gguf, record)


def _check(lora: LoraOptions, opts: TrainOptions) -> None:
    if lora.r < 1 or lora.alpha <= 0 or not 0 <= lora.dropout < 1 or not lora.targets:
        raise ConfigError("lora", "r must be ≥ 1, alpha > 0, 0 ≤ dropout < 1, and at least one target module",
                          "e.g. --rank 16 --alpha 32 --dropout 0.05 --targets q_proj,v_proj")
    if opts.max_steps <= 0 and opts.epochs <= 0:
        raise ConfigError("--epochs", "train for at least one step", "set --epochs > 0 or --steps > 0")
    if opts.lr <= 0 or opts.batch_size < 1 or opts.grad_accum < 1 or opts.max_length < 8:
        raise ConfigError("options", "lr > 0, batch size ≥ 1, grad accumulation ≥ 1 and max length ≥ 8 are required",
                          "check --lr, --batch, --grad-accum and --max-length")


def _renderer(base: BaseModel, opts: TrainOptions) -> Renderer:
    tok = base.tokenizer
    use = getattr(tok, "chat_template", None) and (opts.instruct or opts.chat_format == "template")
    template = chat_template(tok) if use else None
    return Renderer(chat_format=opts.chat_format, instruct=opts.instruct, eos=str(tok.eos_token or ""), template=template)


class _Clock:
    """Collects the loss of every logged step, reports progress, and stops training at the budget."""

    def __init__(self, budget_minutes: float | None, progress: Progress | None) -> None:
        self.deadline = None if budget_minutes is None else time.monotonic() + budget_minutes * 60
        self.progress = progress
        self.losses: list[float] = []
        self.logs: list[dict[str, Any]] = []
        self.steps = 0
        self.stopped = False

    def callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
                if not logs or "loss" not in logs:
                    return
                entry = {k: round(float(v), 6) for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(float(v))}
                entry["step"] = state.global_step
                clock.logs.append(entry)
                clock.losses.append(float(logs["loss"]))
                if clock.progress is not None:
                    clock.progress(entry)

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.steps = state.global_step
                if clock.deadline is not None and time.monotonic() > clock.deadline:
                    clock.stopped = True
                    control.should_training_stop = True

        return _Callback()


def _trainer(method: Method, base: BaseModel, texts: list[dict[str, str]], out: Path, lora: LoraOptions,
             opts: TrainOptions, device: str, clock: _Clock) -> Any:
    from peft import LoraConfig

    from datasets import Dataset

    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets),
                             bias="none", task_type="CAUSAL_LM")
    common: dict[str, Any] = {
        "output_dir": str(out / "trainer"), "num_train_epochs": opts.epochs, "max_steps": opts.max_steps,
        "learning_rate": opts.lr, "per_device_train_batch_size": opts.batch_size,
        "gradient_accumulation_steps": opts.grad_accum, "seed": opts.seed, "data_seed": opts.seed,
        "logging_steps": 1, "save_strategy": "no", "report_to": [], "use_cpu": device == "cpu",
        "warmup_steps": opts.warmup_steps, "lr_scheduler_type": "linear", "disable_tqdm": True,
        "bf16": device.startswith("cuda") and _bf16_ok(), "max_length": opts.max_length,
        _checkpointing_arg(): opts.checkpointing,
    }
    dataset = Dataset.from_list(texts)
    args: Any
    trainer: Any
    with quiet_native_output():  # the trainers' dataset passes draw a progress bar each (aiestack --verbose shows them)
        if method == "sft":
            from trl import SFTConfig, SFTTrainer

            args = SFTConfig(**common, completion_only_loss=True)
            trainer = SFTTrainer(model=base.model, args=args, train_dataset=dataset, processing_class=base.tokenizer,
                                 peft_config=peft_config, callbacks=[clock.callback()])
        else:
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(**common, beta=opts.beta)
            trainer = DPOTrainer(model=base.model, args=args, train_dataset=dataset, processing_class=base.tokenizer,
                                 peft_config=peft_config, callbacks=[clock.callback()])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes through ``progress``; the record keeps every step
    return trainer


def _checkpointing_arg() -> str:
    """``activation_checkpointing`` where transformers has it (5.x warns that ``gradient_checkpointing``,
    the name before it, goes in v6), else ``gradient_checkpointing``."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _tokens(base: BaseModel, texts: list[dict[str, str]], max_length: int, steps: int, opts: TrainOptions) -> int:
    """Tokens the trainer processed: the mean example length (prompt + answers, truncated) × examples seen."""
    tok = base.tokenizer
    lengths = []
    for t in texts:
        prompt = len(tok(t["prompt"])["input_ids"])
        answers = [k for k in ("completion", "chosen", "rejected") if k in t]
        lengths.append(sum(min(max_length, prompt + len(tok(t[k], add_special_tokens=False)["input_ids"])) for k in answers))
    seen = steps * opts.batch_size * opts.grad_accum
    return int(sum(lengths) / len(lengths) * seen) if lengths else 0
