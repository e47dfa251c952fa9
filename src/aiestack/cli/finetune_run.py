"""``aiestack finetune sft|dpo|export|merge``: train LoRA adapters, export them for llama.cpp, merge them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer


class ChatFormatOpt(StrEnum):
    auto = "auto"
    transcript = "transcript"
    template = "template"
    raw = "raw"


class MergeMethodOpt(StrEnum):
    linear = "linear"
    ties = "ties"
    slerp = "slerp"


@contextmanager
def _store_for(data: str) -> Iterator[Any]:
    """No store for a file; else the configured dataset store (to resolve ``NAME[@VERSION]``)."""
    if Path(data).expanduser().is_file():
        yield None
        return
    from aiestack.cli.datasets import open_datasets

    with open_datasets() as store:
        yield store


def _default_out(method: str) -> Path:
    return Path("finetune-runs") / f"{method}-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"


def _train(method: str, data: str, model: str, out: Path | None, rank: int, alpha: int, dropout: float, targets: str,
           epochs: float, steps: int, lr: float, batch: int, grad_accum: int, max_length: int, seed: int, device: str,
           beta: float, chat_format: ChatFormatOpt, instruct: bool, budget: float | None, gguf: bool | None, as_json: bool) -> None:
    from aiestack.finetune import LoraOptions, TrainOptions, dpo, sft
    from aiestack.finetune.base import pick_device
    from aiestack.finetune.train import CPU_BUDGET_MINUTES

    lora = LoraOptions(r=rank, alpha=alpha, dropout=dropout, targets=tuple(t.strip() for t in targets.split(",") if t.strip()))
    opts = TrainOptions(epochs=epochs, max_steps=steps, lr=lr, batch_size=batch, grad_accum=grad_accum, max_length=max_length,
                        seed=seed, device=device, beta=beta, chat_format=chat_format.value, instruct=instruct, budget_minutes=budget)
    resolved = pick_device(device)
    if not as_json:
        if resolved == "cpu":
            limit = budget if budget is not None else CPU_BUDGET_MINUTES
            typer.echo(f"Training on the CPU (torch sees no GPU): stopping after {limit:g} minutes at most (--budget-minutes).")
        else:
            typer.echo(f"Training on {resolved} (GPU).")

    def progress(entry: Mapping[str, Any]) -> None:
        if not as_json:
            extra = f"  margin {entry['rewards/margins']:.3f}" if "rewards/margins" in entry else ""
            typer.echo(f"  step {entry['step']:>4}  loss {entry['loss']:.4f}{extra}")

    run = sft if method == "sft" else dpo
    with _store_for(data) as store:
        result = run(data, model=model, output_dir=out or _default_out(method), lora=lora, options=opts, store=store,
                     export_gguf=gguf, progress=progress)
    record = result.record
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    losses = result.losses
    hw = record["hardware"]
    typer.echo(f"{method.upper()} of {model} on {record['dataset'].get('dataset') or record['dataset'].get('file')} "
               f"({record['examples']} examples): {record['steps']} steps"
               + (" (stopped by the time budget)" if record["stopped_by_budget"] else ""))
    if losses:
        typer.echo(f"  loss {losses[0]:.4f} → {losses[-1]:.4f}")
    typer.echo(f"  {record['train_s']:.1f} s training ({record['wall_s']:.1f} s in all), ~{record['tokens_per_s']} tokens/s "
               f"on {hw.get('gpu') or hw['device']}; {record['trainable_parameters']:,} trainable parameters")
    typer.echo(f"  adapter: {result.adapter_dir}")
    typer.echo(f"  record:  {result.record_path}")
    if result.gguf is not None:
        typer.echo(f"  GGUF LoRA: {result.gguf}\nServe it with the llama_cpp provider:\n")
        typer.echo(_snippet(record["base_model"], result.gguf))


def _snippet(base: Mapping[str, Any], gguf: Path) -> str:
    from aiestack.finetune.base import EMBEDDED

    lines = ["[models.finetuned]", 'provider = "llama_cpp"']
    if str(base.get("name", "")).lower() not in EMBEDDED:
        lines.append(f'path = "{base.get("gguf")}"')
    lines.append(f'lora = "{gguf.resolve()}"')
    return "\n".join(lines)


def register(finetune: typer.Typer) -> None:
    def options(method: str) -> Any:
        def command(
            data: str = typer.Argument(..., help="A dataset NAME[@VERSION] in the store, or a JSONL file (`aiestack datasets export` formats)."),
            model: str = typer.Option("embedded", "--model", "-m", help="embedded (the packaged Gemma 3 270M), a .gguf file, or a local Hugging Face model folder."),
            out: Path = typer.Option(None, "--out", "-o", help="Output folder (default finetune-runs/<method>-<time>)."),
            rank: int = typer.Option(16, "--rank", "-r", min=1, help="LoRA rank."),
            alpha: int = typer.Option(32, "--alpha", min=1, help="LoRA alpha (the update is scaled by alpha / rank)."),
            dropout: float = typer.Option(0.05, "--dropout", min=0.0, max=0.99, help="LoRA dropout."),
            targets: str = typer.Option(",".join(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
                                        "--targets", help="Adapted linear layers, comma-separated."),
            epochs: float = typer.Option(1.0, "--epochs", help="Passes over the data."),
            steps: int = typer.Option(-1, "--steps", help="Optimizer steps (overrides --epochs when > 0)."),
            lr: float = typer.Option(2e-4 if method == "sft" else 5e-5, "--lr", help="Learning rate."),
            batch: int = typer.Option(4, "--batch", min=1, help="Examples per device step."),
            grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Gradient accumulation steps."),
            max_length: int = typer.Option(512, "--max-length", min=8, help="Tokens per example (prompt + answer), truncated."),
            seed: int = typer.Option(0, "--seed"),
            device: str = typer.Option("auto", "--device", help="auto (cuda when torch sees a GPU), cpu, cuda or cuda:N."),
            beta: float = typer.Option(0.1, "--beta", help="DPO: how strongly the policy is held to the reference model."),
            chat_format: ChatFormatOpt = typer.Option(ChatFormatOpt.auto, "--chat-format", help="How prompts are rendered: as the llama_cpp provider serves them."),
            instruct: bool = typer.Option(False, "--instruct", help="The base is instruction-tuned: render with its chat template."),
            budget: float = typer.Option(None, "--budget-minutes", help="Stop training after this long (default 10 on the CPU, none on a GPU)."),
            gguf: bool = typer.Option(None, "--gguf/--no-gguf", help="Export the adapter as a GGUF LoRA (default: when the base is a GGUF)."),
            as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON."),
        ) -> None:
            _train(method, data, model, out, rank, alpha, dropout, targets, epochs, steps, lr, batch, grad_accum, max_length,
                   seed, device, beta, chat_format, instruct, budget, gguf, as_json)

        return command

    finetune.command("sft", help="LoRA supervised finetuning (PEFT + TRL SFTTrainer) on a dataset's chat rows.")(options("sft"))
    finetune.command("dpo", help="LoRA direct preference optimisation (PEFT + TRL DPOTrainer) on a dataset's preference pairs.")(options("dpo"))

    @finetune.command("export")
    def export_(
        adapter: Path = typer.Argument(..., help="A PEFT adapter folder (a run's adapter/ or a merge's output)."),
        out: Path = typer.Option(None, "--out", "-o", help="The .gguf file to write (default: adapter.gguf beside the folder)."),
        architecture: str = typer.Option(None, "--architecture", help="The base's model_type (default: what the run recorded)."),
    ) -> None:
        """Write a PEFT LoRA adapter as a llama.cpp GGUF LoRA (`[models.NAME] lora = ...`)."""
        from aiestack.finetune import export_gguf_lora

        target = out or adapter.parent / f"{adapter.name}.gguf"
        typer.echo(f"wrote {export_gguf_lora(adapter, target, architecture=architecture)}")

    @finetune.command("merge")
    def merge_(
        adapters: list[Path] = typer.Argument(..., help="Two or more PEFT adapter folders trained on the same base."),
        out: Path = typer.Option(..., "--out", "-o", help="The merged adapter folder to write."),
        method: MergeMethodOpt = typer.Option(MergeMethodOpt.linear, "--method", help="linear (task arithmetic), ties or slerp."),
        weights: str = typer.Option(None, "--weights", help="One weight per adapter, comma-separated (default: equal)."),
        density: float = typer.Option(0.5, "--density", help="TIES: fraction of each task vector kept."),
        scale: float = typer.Option(1.0, "--scale", help="TIES: factor on the merged task vector."),
        t: float = typer.Option(0.5, "-t", help="SLERP: 0 is the first adapter, 1 the second."),
        rank: int = typer.Option(None, "--rank", help="Rank of the merged adapter (default: the sum of the inputs' ranks)."),
        gguf: bool = typer.Option(False, "--gguf", help="Also export the merged adapter as a GGUF LoRA."),
    ) -> None:
        """Merge LoRA adapters (linear, TIES, SLERP) into a new adapter."""
        from aiestack.finetune import export_gguf_lora, merge_adapters

        ws = [float(w) for w in weights.split(",")] if weights else None
        result = merge_adapters(adapters, out, method=method.value, weights=ws, density=density, scale=scale, t=t, rank=rank)
        typer.echo(f"merged {len(adapters)} adapters ({method.value}) into {result.output_dir}: {result.modules} layers, rank {result.rank}"
                   + (f", largest SVD truncation error {result.max_error:.2%}" if result.errors else ""))
        if gguf:
            typer.echo(f"wrote {export_gguf_lora(result.output_dir, out.parent / f'{out.name}.gguf')}")
