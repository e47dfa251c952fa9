"""Conformance tests every :class:`~aiestack.batch.BatchRunner` passes, and the tasks they run.

Subclass :class:`BatchRunnerConformance` and provide a ``runner`` fixture (function or module
scoped). The tasks live here, in an importable module, so that runners that ship them to other
processes (Ray) can unpickle them there.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest


def square(x: int) -> int:
    return x * x


def digest(text: str) -> str:
    """A pure function of its input, the same wherever it runs."""
    return hashlib.sha256(text.encode()).hexdigest()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


class CountingLoader:
    """A task with expensive setup (think: loading a model) done on its first call in each worker.

    Returns ``(pid, loads so far in this worker)``: a runner that ships the function once per
    worker sees 1 for every item, one that ships it with every item sees the setup repeated.
    """

    def __init__(self) -> None:
        self._loads = 0
        self._loaded = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def __call__(self, item: int) -> tuple[int, int]:
        with self._lock:
            if not self._loaded:
                self._loaded = True
                self._loads += 1
            return os.getpid(), self._loads


class BatchRunnerConformance:
    """The behaviour every batch runner promises. Needs a ``runner`` fixture."""

    async def test_results_come_back_in_item_order(self, runner: Any) -> None:
        items = list(range(40))
        assert await runner.map(square, items) == [x * x for x in items]

    async def test_results_equal_calling_the_function_here(self, runner: Any) -> None:
        texts = [f"text {i} " * (i % 7 + 1) for i in range(25)]
        assert await runner.map(digest, texts) == [digest(t) for t in texts]

    async def test_no_items_give_no_results(self, runner: Any) -> None:
        assert await runner.map(square, []) == []

    async def test_an_error_in_the_function_is_raised(self, runner: Any) -> None:
        with pytest.raises(ValueError, match="three is not allowed"):
            await runner.map(fail_on_three, [1, 2, 3, 4])

    async def test_a_task_is_set_up_once_per_worker_not_per_item(self, runner: Any) -> None:
        results = await runner.map(CountingLoader(), list(range(12)))
        assert {loads for _, loads in results} == {1}

    async def test_the_runner_can_be_used_again(self, runner: Any) -> None:
        assert await runner.map(square, [1, 2]) == [1, 4]
        assert await runner.map(square, [3]) == [9]
