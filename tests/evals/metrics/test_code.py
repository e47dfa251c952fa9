from __future__ import annotations

import pytest

from aiestack.evals.metrics import build_metric

pytestmark = pytest.mark.unit

ADD = "```python\ndef add(a, b):\n    return a + b\n```"


async def test_passing_code_scores_one(make_sample) -> None:
    metric = build_metric("functional_correctness", {})
    score = await metric.score(make_sample(ADD, metadata={"tests": "assert add(2, 3) == 5"}))
    assert score.value == 1.0, score.detail
    assert score.detail["network"] in ("namespace+audit-hook", "audit-hook")


async def test_failing_test_reports_the_assertion(make_sample) -> None:
    metric = build_metric("functional_correctness", {})
    score = await metric.score(make_sample(ADD, {"tests": "assert add(2, 2) == 5, 'wrong sum'"}))
    assert score.value == 0.0
    assert "AssertionError: wrong sum" in score.detail["reason"]


async def test_wall_time_limit_kills_the_program(make_sample) -> None:
    metric = build_metric("functional_correctness", {"timeout_s": 0.5})
    score = await metric.score(make_sample("while True:\n    pass", {"tests": "pass"}))
    assert score.value == 0.0 and "timed out" in score.detail["reason"]


async def test_memory_limit(make_sample) -> None:
    metric = build_metric("functional_correctness", {"memory_mb": 256})
    score = await metric.score(make_sample("x = bytearray(1024 * 1024 * 1024)", {"tests": "pass"}))
    assert score.value == 0.0 and "memory" in score.detail["reason"]


async def test_network_is_blocked(make_sample) -> None:
    code = "import socket\ns = socket.create_connection(('127.0.0.1', 9), timeout=1)"
    score = await build_metric("functional_correctness", {}).score(make_sample(code, {"tests": "pass"}))
    assert score.value == 0.0
    assert "the sandbox does not allow socket" in score.detail["stderr"]


async def test_runs_in_a_fresh_directory_without_user_environment(make_sample, monkeypatch) -> None:
    monkeypatch.setenv("AIESTACK_SECRET_FOR_TEST", "leak")
    code = "import os\nassert 'AIESTACK_SECRET_FOR_TEST' not in os.environ\nassert os.listdir('.') == ['program.py']"
    score = await build_metric("functional_correctness", {}).score(make_sample(code, {"tests": "pass"}))
    assert score.value == 1.0, score.detail


async def test_missing_tests_is_not_applicable(make_sample) -> None:
    score = await build_metric("functional_correctness", {}).score(make_sample(ADD))
    assert score.value is None


async def test_a_test_cannot_write_outside_its_directory(make_sample, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The defect of issue #13: a test wrote a file outside its temp dir."""
    target = tmp_path / "escaped.txt"
    code = f"open({str(target)!r}, 'w').write('x')"
    score = await build_metric("functional_correctness", {}).score(make_sample(code, {"tests": "pass"}))
    assert score.value == 0.0 and not target.exists()
