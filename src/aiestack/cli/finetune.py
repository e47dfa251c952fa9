"""``aiestack finetune plan``: the memory and compute arithmetic of finetuning a model (book ch. 7)."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.table import Table

from aiestack.cli.console import table_console


class Method(StrEnum):
    full = "full"
    lora = "lora"
    qlora = "qlora"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Optimizer(StrEnum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"
    sgd = "sgd"


def _gib(value: float) -> str:
    return f"{value / 1024**3:,.2f}"


def register(app: typer.Typer) -> None:
    from aiestack.cli import finetune_embeddings, finetune_run

    finetune = typer.Typer(help="Finetuning: plan a run, train LoRA adapters (SFT, DPO), export them to GGUF, merge them; "
                           "finetune a collection's embedding model (see docs/finetuning.md).", no_args_is_help=True)
    app.add_typer(finetune, name="finetune")
    finetune_run.register(finetune)
    finetune_embeddings.register(finetune)

    @finetune.command("plan")
    def plan_(
        model: str = typer.Argument(..., help="A known architecture (gemma-3-270m, llama-3.1-8b, ...) or a Hugging Face config.json."),
        method: list[Method] = typer.Option(None, "--method", help="full, lora, qlora (repeat to compare; default: all three)."),
        weights: Precision = typer.Option(Precision.bf16, "--weights", help="Precision of the weights (QLoRA always stores them in 4-bit NF4)."),
        compute: Precision = typer.Option(Precision.bf16, "--compute", help="Precision of activations, gradients and adapters."),
        optimizer: Optimizer = typer.Option(Optimizer.adamw, "--optimizer"),
        rank: int = typer.Option(16, "--rank", "-r", min=1, max=4096, help="LoRA rank."),
        targets: str = typer.Option("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "--targets", help="LoRA: the adapted linear layers."),
        batch: int = typer.Option(8, "--batch", min=1, help="Micro-batch size (sequences per step)."),
        seq_len: int = typer.Option(1024, "--seq-len", min=1, help="Tokens per sequence."),
        checkpointing: bool = typer.Option(False, "--checkpointing", help="Activation (gradient) checkpointing."),
        tokens: float = typer.Option(0, "--tokens", min=0, help="Training tokens (examples × length × epochs) for the compute estimate."),
        gpu: str = typer.Option("h100", "--gpu", help="Accelerator for the time estimate: h100, h200, a100, l4, a10g, t4."),
        mfu: float = typer.Option(0.4, "--mfu", min=0.01, max=1, help="Model FLOPs utilisation assumed for the time estimate."),
        as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    ) -> None:
        """Weights, gradients, optimizer states and activations in GiB, and training FLOPs, for full, LoRA and QLoRA."""
        from aiestack.finetune.plan import HARDWARE, Setting, architecture, inference_bytes, plan

        try:
            arch = architecture(model)
        except (KeyError, ValueError) as exc:
            raise typer.BadParameter(str(exc.args[0]), param_hint="MODEL") from None
        if gpu not in HARDWARE:
            raise typer.BadParameter(f"unknown accelerator {gpu!r}; use one of {', '.join(HARDWARE)}", param_hint="--gpu")
        plans = []
        for m in method or list(Method):
            setting = Setting(method=m.value, weights=weights.value, compute=compute.value, optimizer=optimizer.value, rank=rank,
                              targets=tuple(t.strip() for t in targets.split(",") if t.strip()), batch=batch, seq_len=seq_len,
                              checkpointing=checkpointing, tokens=int(tokens))
            try:
                plans.append(plan(arch, setting))
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
        if as_json:
            typer.echo(json.dumps([{"method": p.setting.method, "parameters": p.parameters, "trainable": p.trainable,
                                    "bytes": dict(p.bytes), "total_bytes": p.total, "flops": p.flops,
                                    "hours": p.hours(HARDWARE[gpu], mfu) if p.flops else None} for p in plans], indent=2))
            return
        typer.echo(f"{arch.name}: {arch.parameters / 1e6:,.1f}M parameters; serving needs ~{_gib(inference_bytes(arch))} GiB in bf16 "
                   f"(weights × 1.2); batch {batch} × {seq_len} tokens{', checkpointing' if checkpointing else ''}")
        table = Table("method", "trainable", "weights", "gradients", "optimizer", "activations", "total GiB", box=None)
        if tokens:
            table.add_column(f"hours on {gpu} (MFU {mfu:.0%})")
        for p in plans:
            b = p.bytes
            row = [p.setting.method, f"{p.trainable / 1e6:,.1f}M ({p.trainable / p.parameters:.2%})", _gib(b["weights"]),
                   _gib(b["gradients"]), _gib(b["optimizer"]), _gib(b["activations"]), _gib(p.total)]
            if tokens:
                row.append(f"{p.hours(HARDWARE[gpu], mfu):,.2f}")
            table.add_row(*row)
        table_console().print(table)
        typer.echo("Estimates of the dominant terms (book ch. 7); frameworks add buffers and the CUDA context (1-2 GB).")
