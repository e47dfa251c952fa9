"""The data flywheel (AI Engineering, ch. 8 and 10): build → curate → optimise or train → evaluate → promote.

- :mod:`aiestack.flywheel.prompt_opt`: prompt optimisation (rewrites and few-shot selection scored
  on a dev set with the eval harness), ``aiestack prompts optimise``;
- :mod:`aiestack.flywheel.gate`: the promotion gate (the suite's regression gates and a paired
  bootstrap of the improvement), shared by both;
- :mod:`aiestack.flywheel.spec` (``flywheel.yaml``), :mod:`aiestack.flywheel.runner` (stored, resumable
  runs), :mod:`aiestack.flywheel.steps` and :mod:`aiestack.flywheel.embedding` (the steps),
  :mod:`aiestack.flywheel.config_edit` (route promotions in aiestack.toml): ``aiestack flywheel``.

docs/flywheel.md is the guide.
"""

from aiestack.flywheel.gate import Decision, decide
from aiestack.flywheel.prompt_opt import Candidate, OptimiseOptions, OptimiseResult, PromptOptimiser, Scored

__all__ = ["Candidate", "Decision", "OptimiseOptions", "OptimiseResult", "PromptOptimiser", "Scored", "decide"]
