"""A SQLite transaction that reads before it writes must not fail beside a concurrent writer.

Found as a flaky agent-cancel test: the keeper's final ``put_run`` (read the run's owner, then
update) failed with "database is locked" when the background writer stored the cancelled exchange
between its read and its write. A deferred ``BEGIN`` cannot upgrade a stale read snapshot to a
write; ``write_transaction`` begins IMMEDIATE, so the second writer waits instead.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiestack.stores.sql.engine import create_store_engine, parse_url, write_transaction

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src" / "aiestack"


def _engines(tmp_path: Path) -> tuple[sa.Engine, sa.Engine]:
    url = parse_url(f"sqlite:///{tmp_path / 'store.db'}")
    first, second = create_store_engine(url), create_store_engine(url)  # two pools, as two stores have
    with write_transaction(first) as connection:
        connection.exec_driver_sql("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)")
        connection.exec_driver_sql("INSERT INTO runs VALUES (1, 'running')")
    return first, second


def test_a_read_then_write_transaction_survives_a_write_in_between(tmp_path: Path) -> None:
    first, second = _engines(tmp_path)
    errors: list[BaseException] = []

    def other_writer() -> None:
        try:
            with write_transaction(second) as connection:
                connection.exec_driver_sql("INSERT INTO runs VALUES (2, 'running')")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with write_transaction(first) as connection:
        assert connection.exec_driver_sql("SELECT status FROM runs WHERE id = 1").scalar() == "running"
        writer = threading.Thread(target=other_writer)
        writer.start()
        time.sleep(0.2)  # the other writer tries now: it must wait for this transaction, not slip in
        connection.exec_driver_sql("UPDATE runs SET status = 'stopped' WHERE id = 1")
    writer.join(10)
    assert not errors, errors
    with first.connect() as connection:
        assert connection.exec_driver_sql("SELECT id, status FROM runs ORDER BY id").all() == [
            (1, "stopped"),
            (2, "running"),
        ]


def test_a_deferred_transaction_fails_there_which_is_why_writes_begin_immediate(tmp_path: Path) -> None:
    first, second = _engines(tmp_path)
    with pytest.raises(sa.exc.OperationalError, match="locked"), first.begin() as connection:
        connection.exec_driver_sql("SELECT status FROM runs WHERE id = 1").scalar()
        with write_transaction(second) as other:
            other.exec_driver_sql("INSERT INTO runs VALUES (2, 'running')")
        connection.exec_driver_sql("UPDATE runs SET status = 'stopped' WHERE id = 1")


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    first, second = _engines(tmp_path)
    with write_transaction(first) as connection:
        connection.exec_driver_sql("UPDATE runs SET status = 'stopped' WHERE id = 1")
        started = time.perf_counter()
        with second.connect() as reader:  # WAL: sees the last commit, at once
            assert reader.exec_driver_sql("SELECT status FROM runs WHERE id = 1").scalar() == "running"
        assert time.perf_counter() - started < 1.0


def test_no_sql_store_opens_a_write_transaction_with_a_deferred_begin() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted((SRC / "stores").glob("*_sql.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"engine\.begin\(\)", line)
    ]
    assert not offenders, f"use write_transaction(engine) for transactions that write: {offenders}"
