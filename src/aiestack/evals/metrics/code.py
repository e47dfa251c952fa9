"""Functional correctness: run the generated Python against the example's tests, in the sandbox.

The program is the model's code (a surrounding Markdown code block is removed) followed by the
tests (plain asserts, or HumanEval's ``check(candidate)`` plus the call you put in the tests). It
scores 1.0 when the program exits 0, else 0.0 with the reason (timeout, memory, exit code and the
end of stderr) in the detail. The tests come from ``tests_key`` (default ``tests``) looked up in the
reference mapping, the metadata, then the input of the example.

The program runs in :class:`aiestack.sandbox.Sandbox` (the one sandbox the agents' python tool uses
too): a separate process with rlimits, an empty environment, a private directory as the only
writable place, no network, killed with its children on timeout. See :mod:`aiestack.sandbox` for
exactly what is and is not stopped; ``detail["network"]`` and ``detail["isolation"]`` say which
layers were in force on this machine.
"""

from __future__ import annotations

import contextlib
import signal
import sys

from pydantic import Field

from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import MetricOptions, lookup
from aiestack.evals.metrics.structured import strip_fences
from aiestack.sandbox import Limits, Sandbox

_STDERR_TAIL = 2000


class CodeOptions(MetricOptions):
    tests_key: str = "tests"
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=64)
    python: str = Field(default_factory=lambda: sys.executable)


class FunctionalCorrectness:
    """1.0 when the generated code passes the example's tests in a subprocess sandbox."""

    higher_is_better = True

    def __init__(self, name: str, opts: CodeOptions) -> None:
        self.name = name
        self._opts = opts
        self._sandbox = Sandbox(Limits(timeout_s=opts.timeout_s, memory_mb=opts.memory_mb), python=opts.python)

    async def score(self, sample: Sample) -> Score:
        tests = lookup(sample, self._opts.tests_key)
        if not isinstance(tests, str) or not tests.strip():
            return Score(None, error=f"the example has no '{self._opts.tests_key}' (Python test code)")
        program = f"{strip_fences(sample.output)}\n\n{tests}\n"
        return await self.run(program)

    async def run(self, program: str) -> Score:
        """Run ``program`` in the sandbox; 1.0 when it exits 0."""
        result = await self._sandbox.run_python(program)
        where = {"network": result.isolation.network, "isolation": "namespaces" if result.isolation.namespaces else "process"}
        if result.timed_out:
            return Score(0.0, {"reason": f"timed out after {self._opts.timeout_s:g} s", **where})
        stderr = result.stderr[-_STDERR_TAIL:]
        if result.exit_code == 0:
            return Score(1.0, where)
        return Score(0.0, {"reason": _reason(result.exit_code, stderr), "stderr": stderr, **where})


def _reason(code: int | None, stderr: str) -> str:
    if "MemoryError" in stderr:
        return "ran out of memory (memory limit)"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    return f"exit code {code}: {last}" if last else f"exit code {code}"
