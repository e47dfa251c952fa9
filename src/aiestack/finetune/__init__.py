"""Finetuning (AI Engineering, ch. 7): the memory and compute plan of a run (:mod:`aiestack.finetune.plan`)."""
