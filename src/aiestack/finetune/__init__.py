"""Finetuning (AI Engineering, ch. 7): plan a run, train LoRA adapters, export them for llama.cpp, merge them.

- :mod:`aiestack.finetune.plan`: the memory and compute arithmetic of a run (``aiestack finetune plan``).
- :func:`sft` and :func:`dpo` (:mod:`aiestack.finetune.train`): LoRA with PEFT and TRL on a Hugging Face
  causal LM, the embedded Gemma 3 270M included, from a stored dataset version or an exported JSONL
  file; each run writes the adapter, its GGUF export and a ``run.json`` record, and returns a
  :class:`FinetuneResult`.
- :func:`export_gguf_lora` (:mod:`aiestack.finetune.gguf_lora`): a PEFT adapter as a llama.cpp GGUF LoRA,
  which the llama_cpp provider serves with ``[models.NAME] lora = "..."``.
- :func:`merge_adapters` (:mod:`aiestack.finetune.merge`): linear, TIES and SLERP merging of adapters.

The heavy dependencies (torch, transformers, peft, trl, gguf) are imported only when a run starts:
``pip install 'aiestack[local,finetune]'``. docs/finetuning.md is the guide.
"""

from __future__ import annotations

from aiestack.finetune.data import TrainingData, load_training_data
from aiestack.finetune.gguf_lora import export_gguf_lora
from aiestack.finetune.merge import MERGE_METHODS, MergeResult, merge_adapters
from aiestack.finetune.train import FinetuneResult, LoraOptions, TrainOptions, dpo, sft

__all__ = [
    "MERGE_METHODS",
    "FinetuneResult",
    "LoraOptions",
    "MergeResult",
    "TrainOptions",
    "TrainingData",
    "dpo",
    "export_gguf_lora",
    "load_training_data",
    "merge_adapters",
    "sft",
]
