"""``aiestack bench load``: a load benchmark for any OpenAI-compatible endpoint (docs/load-bench.md).

Closed-loop concurrency sweeps and open-loop Poisson rates; prompt and output lengths from a
distribution, a dataset or replayed stored exchanges; TTFT, TPOT, inter-token and end-to-end latency
percentiles, output tokens/s, requests/s and goodput under SLOs; a JSON and an HTML report.
"""

from aiestack.loadbench.client import Endpoint
from aiestack.loadbench.metrics import LevelStats, RequestResult, Slo, parse_slo, summarize
from aiestack.loadbench.report import Report, render_html
from aiestack.loadbench.runner import Plan, measure, run_plan
from aiestack.loadbench.workload import (
    LengthDist,
    RequestSpec,
    Workload,
    from_dataset,
    from_exchanges,
    parse_length,
    synthetic,
)

__all__ = [
    "Endpoint",
    "LengthDist",
    "LevelStats",
    "Plan",
    "Report",
    "RequestResult",
    "RequestSpec",
    "Slo",
    "Workload",
    "from_dataset",
    "from_exchanges",
    "measure",
    "parse_length",
    "parse_slo",
    "render_html",
    "run_plan",
    "summarize",
    "synthetic",
]
