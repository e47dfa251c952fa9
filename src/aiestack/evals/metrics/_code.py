"""Functional correctness: run the generated Python against the example's tests, in a sandbox.

The program is the model's code (a surrounding Markdown code block is removed) followed by the
tests (plain asserts, or HumanEval's ``check(candidate)`` plus the call you put in the tests). It
scores 1.0 when the program exits 0, else 0.0 with the reason (timeout, memory, exit code and the
end of stderr) in the detail. The tests come from ``tests_key`` (default ``tests``) looked up in the
reference mapping, the metadata, then the input of the example.

What is enforced, and how:

- **Isolation from the user's environment**: ``python -I`` (no ``PYTHON*`` variables, no user
  site-packages, no current directory on ``sys.path``), an almost empty environment, and a fresh
  temporary directory as the working directory, deleted afterwards.
- **Wall time**: the process group is killed after ``timeout_s``; CPU time is also capped with
  ``RLIMIT_CPU`` so a busy loop dies even if the parent stalls.
- **Memory**: ``RLIMIT_AS`` (address space) of ``memory_mb``; file size ``RLIMIT_FSIZE`` 16 MiB.
- **Network**: when ``unshare -n`` works on this machine (Linux with user namespaces, or root), the
  program runs in a new network namespace with no interfaces. Always, an audit hook installed
  before the generated code runs refuses socket creation, connect, bind and name lookups (audit
  hooks cannot be removed from inside the process). ``detail["network"]`` says which was in force.

This is a guard against accidents and sloppy code, not a security boundary against hostile code:
run untrusted generations in a container or VM as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics._options import MetricOptions, lookup
from aiestack.evals.metrics._structured import strip_fences

_PRELUDE = """\
import sys as _aiestack_sys
def _aiestack_no_network(event, args):
    if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
                 "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto"):
        raise PermissionError("network access is disabled in the functional-correctness sandbox")
_aiestack_sys.addaudithook(_aiestack_no_network)
del _aiestack_no_network, _aiestack_sys
"""
_STDERR_TAIL = 2000


class CodeOptions(MetricOptions):
    tests_key: str = "tests"
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=64)
    python: str = Field(default_factory=lambda: sys.executable)


def _limits(memory_mb: int, cpu_s: int) -> Callable[[], None]:
    """The ``preexec_fn`` that applies resource limits in the child before it executes Python."""

    def apply() -> None:
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class FunctionalCorrectness:
    """1.0 when the generated code passes the example's tests in a subprocess sandbox."""

    higher_is_better = True

    def __init__(self, name: str, opts: CodeOptions) -> None:
        self.name = name
        self._opts = opts
        self._unshare: bool | None = None  # probed once per metric, on first use

    async def _can_unshare(self) -> bool:
        if self._unshare is None:
            self._unshare = False
            tool = shutil.which("unshare")
            if tool is not None:
                with contextlib.suppress(OSError):
                    proc = await asyncio.create_subprocess_exec(
                        tool,
                        "-n",
                        "true",
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                    self._unshare = await proc.wait() == 0
        return self._unshare

    async def score(self, sample: Sample) -> Score:
        tests = lookup(sample, self._opts.tests_key)
        if not isinstance(tests, str) or not tests.strip():
            return Score(None, error=f"the example has no '{self._opts.tests_key}' (Python test code)")
        program = f"{_PRELUDE}\n{strip_fences(sample.output)}\n\n{tests}\n"
        return await self.run(program)

    async def run(self, program: str) -> Score:
        """Run ``program`` in the sandbox; 1.0 when it exits 0."""
        unshare = await self._can_unshare()
        network = "namespace+audit-hook" if unshare else "audit-hook"
        with tempfile.TemporaryDirectory(prefix="aiestack-code-") as tmp:
            path = Path(tmp) / "program.py"
            path.write_text(program, encoding="utf-8")
            argv = [self._opts.python, "-I", str(path)]
            if unshare:
                argv = ["unshare", "-n", *argv]
            env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": tmp, "TMPDIR": tmp}
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=tmp,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_limits(self._opts.memory_mb, int(self._opts.timeout_s) + 1),
            )
            try:
                _, err = await asyncio.wait_for(proc.communicate(), timeout=self._opts.timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                return Score(
                    0.0, {"reason": f"timed out after {self._opts.timeout_s:g} s", "network": network}
                )
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
        stderr = err.decode("utf-8", "replace")[-_STDERR_TAIL:]
        if proc.returncode == 0:
            return Score(1.0, {"network": network})
        return Score(0.0, {"reason": _reason(proc.returncode, stderr), "stderr": stderr, "network": network})


def _reason(code: int | None, stderr: str) -> str:
    if "MemoryError" in stderr:
        return "ran out of memory (memory limit)"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    return f"exit code {code}: {last}" if last else f"exit code {code}"
