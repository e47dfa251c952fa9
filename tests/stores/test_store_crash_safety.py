"""SIGKILL in the middle of writing or migrating leaves a SQLite database that opens, is whole, and migrates."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.sql.migrate import head_revision

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Writes exchanges (and a span each) through the BatchWriter as fast as it can, forever.
# Each record's payload length varies, and its digest lets the test check that it is whole.
WRITER_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from aiestack.stores.exchanges_sql import SqlExchangeStore
    from aiestack.stores.writer import BatchWriter
    from aiestack.stores.base import ExchangeRecord
    from aiestack.types import SpanRecord

    url, run = sys.argv[1], int(sys.argv[2])
    store = SqlExchangeStore(url)
    store.migrate()
    writer = BatchWriter(store, batch_size=50, flush_interval_s=0.005)
    i = 0
    while True:
        payload = "Grüße 🚀 " * (i % 300)
        request = {"run": run, "i": i, "payload": payload}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        ex_id = f"ex_{run}_{i:08d}"
        writer.submit_exchange(ExchangeRecord(
            id=ex_id, created_at=float(i), model="m", outcome="ok", request=request,
            response=payload, attributes={"digest": digest}, output_tokens=len(payload)))
        writer.submit_span(SpanRecord(trace_id=f"t{run}", span_id=f"s{i}", parent_id=None, name="gen",
                                      start_ns=i, end_ns=i + 1, exchange_id=ex_id))
        i += 1
        if i % 200 == 0:
            writer.flush()
    """
)

MIGRATE_SCRIPT = textwrap.dedent(
    """
    import sys
    from aiestack.stores.exchanges_sql import SqlExchangeStore
    store = SqlExchangeStore(sys.argv[1])
    print("migrating", flush=True)
    store.migrate()
    print("done", flush=True)
    """
)


def _rows(path: Path) -> int:
    with sqlite3.connect(path, timeout=10) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM exchanges").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def _check_database(path: Path) -> int:
    """Integrity, whole records, then a clean migrate(); returns the number of exchanges."""
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = SqlExchangeStore(f"sqlite:///{path}")
    store.migrate()
    records = store.list_exchanges(limit=10_000_000)
    for record in records:
        digest = hashlib.sha256(json.dumps(dict(record.request), sort_keys=True).encode()).hexdigest()
        assert record.attributes == {"digest": digest}, record.id
        assert record.response is not None and record.response == record.request["payload"]
        assert record.output_tokens == len(record.response)
    for run in {r.request["run"] for r in records}:
        for s in store.spans(trace_id=f"t{run}"):
            assert s.exchange_id == f"ex_{run}_{s.start_ns:08d}"
    with store.engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert version == head_revision()
    store.close()
    return len(records)


def test_killing_the_writer_mid_way_leaves_a_whole_database(tmp_path: Path) -> None:
    path = tmp_path / "crash" / "aiestack.db"
    seen = 0
    for run, kill_after_rows in enumerate([300, 1500, 4000]):
        child = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, f"sqlite:///{path}", str(run)])
        try:
            deadline = time.monotonic() + 60
            while not path.exists() or _rows(path) < seen + kill_after_rows:
                assert child.poll() is None, "the writer process died on its own"
                assert time.monotonic() < deadline, "the writer process made no progress"
                time.sleep(0.02)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        count = _check_database(path)
        assert count >= seen + kill_after_rows
        seen = count


def _tables_at_each_revision(folder: Path) -> dict[frozenset[str], list[list[tuple[str, ...]]]]:
    """For every set of tables a fresh database can have, the version rows that go with it.

    Revisions that only add columns or indexes leave the same tables as the one before them, so a
    set of tables may go with several versions.
    """
    import sqlalchemy as sa
    from alembic import command
    from alembic.script import ScriptDirectory

    from aiestack.stores.sql.migrate import alembic_config

    folder.mkdir(exist_ok=True)
    config = alembic_config()
    revisions = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions()]
    expected: dict[frozenset[str], list[list[tuple[str, ...]]]] = {frozenset(): [[]]}
    for revision in revisions:
        engine = sa.create_engine(f"sqlite:///{folder / (revision + '.db')}")
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        with engine.connect() as connection:
            names = {r[0] for r in connection.execute(sa.text("SELECT name FROM sqlite_master WHERE type='table'"))}
        engine.dispose()
        expected.setdefault(frozenset(names), []).append([(revision,)])
    return expected


def test_killing_a_migration_leaves_a_database_that_migrates(tmp_path: Path) -> None:
    # The migration runs some 40-50 ms after "migrating" on a typical machine: the delays sweep
    # before, through and after it. The deterministic variant is in test_store_migrations.py.
    expected = _tables_at_each_revision(tmp_path / "reference")
    for attempt, delay in enumerate([0.0, 0.02, 0.035, 0.04, 0.045, 0.05, 0.055, 0.06, 0.08, 0.12]):
        path = tmp_path / f"m{attempt}.db"
        child = subprocess.Popen(
            [sys.executable, "-c", MIGRATE_SCRIPT, f"sqlite:///{path}"], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "migrating"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if path.exists():
            with sqlite3.connect(path) as connection:
                tables = {
                    r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                version = (
                    connection.execute("SELECT version_num FROM alembic_version").fetchall() if tables else []
                )
            # All or nothing per revision: no schema and no version, or whole revisions and the
            # version row of the last one applied.
            assert frozenset(tables) in expected
            assert version in expected[frozenset(tables)]
        assert _check_database(path) == 0
