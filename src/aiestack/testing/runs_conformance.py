"""Conformance tests for agent run stores, as a mixin for store backends.

Use it like :mod:`aiestack.testing.datasets_conformance`: subclass in a ``Test*`` class and provide
a ``store`` fixture yielding a migrated, empty store.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from aiestack.stores.runs import RunRecord, RunStore

UNICODE = "Grüße, 世界! — emoji 🚀 and a quote ' and \" and a backslash \\"
BASE = 1_750_000_000.0


def run_record(run_id: str = "run_1", **overrides: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "tenant": "acme",
        "agent": "helper",
        "model": "gpt-4o-mini",
        "status": "waiting",
        "created_at": BASE,
        "updated_at": BASE + 1.5,
        "stop_reason": "waiting",
        "key_id": "key_1",
        "task": UNICODE,
        "answer": None,
        "detail": "waits for approval of send_mail",
        "steps": 1,
        "input_tokens": 12,
        "output_tokens": 7,
        "cost_usd": 0.00125,
        "pending": {"messages": [{"role": "user", "content": UNICODE}], "nested": {"n": [1, 2.5, None]}},
    }
    values.update(overrides)
    return RunRecord(**values)


STEPS: list[dict[str, Any]] = [
    {"type": "run_started", "run_id": "run_1", "task": UNICODE},
    {"type": "model_call", "run_id": "run_1", "step": 1, "tool_calls": [{"id": "c1", "name": "send_mail", "arguments": "{}"}]},
]


class RunStoreConformance:
    """What every :class:`~aiestack.stores.runs.RunStore` guarantees."""

    def test_is_a_run_store(self, store: Any) -> None:
        assert isinstance(store, RunStore)

    def test_a_run_round_trips_every_field_and_its_steps_in_order(self, store: RunStore) -> None:
        record = run_record()
        store.put_run(record, STEPS)
        assert store.get_run("run_1") == record
        assert store.get_run("run_1", tenant="acme") == record
        assert store.run_steps("run_1") == STEPS

    def test_steps_are_appended_and_the_record_replaced(self, store: RunStore) -> None:
        store.put_run(run_record(), STEPS[:1])
        done = run_record(status="finished", stop_reason="final_answer", answer="done", pending=None, steps=2)
        store.put_run(done, STEPS[1:])
        store.put_run(done)  # no steps: the record only
        assert store.get_run("run_1") == done
        assert store.run_steps("run_1") == STEPS

    def test_tenants_see_only_their_runs(self, store: RunStore) -> None:
        store.put_run(run_record(), STEPS)
        store.put_run(run_record("run_2", tenant="other", created_at=BASE + 1))
        assert store.get_run("run_1", tenant="other") is None
        assert store.run_steps("run_1", tenant="other") == []
        assert store.claim_run("run_1", tenant="other", at=BASE + 5) is None
        assert store.get_run("run_1").status == "waiting"  # type: ignore[union-attr]
        assert [r.run_id for r in store.list_runs(tenant="other")] == ["run_2"]
        assert [r.run_id for r in store.list_runs()] == ["run_2", "run_1"]
        with pytest.raises(ValueError, match="another tenant"):
            store.put_run(run_record(tenant="other"))
        assert store.get_run("run_1").tenant == "acme"  # type: ignore[union-attr]

    def test_list_filters_pages_and_leaves_pending_out(self, store: RunStore) -> None:
        for i in range(4):
            store.put_run(run_record(
                f"run_{i}", agent="a" if i % 2 else "b", status="finished" if i < 2 else "waiting", created_at=BASE + i,
            ))  # fmt: skip
        assert [r.run_id for r in store.list_runs()] == ["run_3", "run_2", "run_1", "run_0"]
        assert [r.run_id for r in store.list_runs(agent="a")] == ["run_3", "run_1"]
        assert [r.run_id for r in store.list_runs(status="waiting")] == ["run_3", "run_2"]
        assert [r.run_id for r in store.list_runs(limit=2, offset=1)] == ["run_2", "run_1"]
        assert all(r.pending is None for r in store.list_runs())
        assert store.list_runs(agent="nope") == []

    def test_unknown_runs(self, store: RunStore) -> None:
        assert store.get_run("nope") is None
        assert store.run_steps("nope") == []
        assert store.claim_run("nope", at=BASE) is None

    def test_a_claim_takes_a_waiting_run_once(self, store: RunStore) -> None:
        record = run_record()
        store.put_run(record)
        claimed = store.claim_run("run_1", tenant="acme", at=BASE + 9)
        assert claimed == record  # as it was, pending included
        now = store.get_run("run_1")
        assert now is not None and now.status == "running" and now.updated_at == BASE + 9
        assert store.claim_run("run_1", at=BASE + 10) is None
        store.put_run(run_record(status="finished", pending=None))
        assert store.claim_run("run_1", at=BASE + 11) is None

    def test_a_cancel_request_marks_only_a_running_run_of_the_tenant(self, store: RunStore) -> None:
        store.put_run(run_record(status="running", stop_reason=None, pending=None))
        assert store.request_cancel("run_1", tenant="other", reason="stop") is None
        assert store.request_cancel("nope", reason="stop") is None
        asked = store.request_cancel("run_1", tenant="acme", reason="stop it " + UNICODE)
        assert asked is not None and asked.status == "cancelling" and asked.detail == "stop it " + UNICODE
        assert asked.updated_at == BASE + 1.5 and asked.task == UNICODE and asked.steps == 1  # the last heartbeat, kept
        assert store.get_run("run_1") == asked
        assert store.request_cancel("run_1", reason="again") is None  # asked already
        assert [r.status for r in store.list_runs(status="cancelling")] == ["cancelling"]
        store.put_run(run_record(status="stopped", stop_reason="cancelled", pending=None))  # its process stopped it
        assert store.request_cancel("run_1", reason="late") is None
        store.put_run(run_record("run_2"))
        assert store.request_cancel("run_2", reason="waiting") is None  # claim_run stops those
        assert store.get_run("run_2") == run_record("run_2")

    def test_a_heartbeat_touches_only_a_run_in_flight(self, store: RunStore) -> None:
        store.put_run(run_record(status="running", stop_reason=None, pending=None))
        assert store.touch_run("run_1", at=BASE + 7) is True
        assert store.get_run("run_1").updated_at == BASE + 7  # type: ignore[union-attr]
        store.request_cancel("run_1", reason="stop")
        assert store.touch_run("run_1", at=BASE + 8) is True
        assert store.get_run("run_1").updated_at == BASE + 8  # type: ignore[union-attr]
        store.put_run(run_record(status="stopped", stop_reason="cancelled", pending=None, updated_at=BASE + 9))
        assert store.touch_run("run_1", at=BASE + 10) is False and store.touch_run("nope", at=BASE) is False
        assert store.get_run("run_1").updated_at == BASE + 9  # type: ignore[union-attr]
        store.put_run(run_record("run_2"))  # waiting
        assert store.touch_run("run_2", at=BASE + 10) is False

    def test_concurrent_claims_succeed_once(self, store: RunStore) -> None:
        store.put_run(run_record())
        won: list[RunRecord] = []
        errors: list[BaseException] = []

        def claim(i: int) -> None:
            try:
                got = store.claim_run("run_1", at=BASE + i)
                if got is not None:
                    won.append(got)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(won) == 1

    def test_a_bad_status_is_refused_and_stores_nothing(self, store: RunStore) -> None:
        with pytest.raises(ValueError, match="run status"):
            store.put_run(dataclasses.replace(run_record(), status="done"), STEPS)
        assert store.get_run("run_1") is None and store.run_steps("run_1") == []
