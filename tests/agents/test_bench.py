"""bench/agents.py runs end to end and reports the per-step figures (the anchors, not project dependencies, skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_the_agents_bench_runs_and_reports_ratios() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "agents.py"), "--steps", "2", "--rounds", "2", "--warmup", "1", "--skip", "smolagents", "pydantic-ai"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "2 tool steps + the answer = 3 model calls a run" in out
    for row in ("floor (raw aiohttp loop)", "aiestack (default stack)", "aiestack (tracing only)"):
        assert row in out
