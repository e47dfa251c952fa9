"""``sql_execution``: equivalent queries pass, wrong ones fail, and nothing a model writes can change the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aiestack.errors import ConfigError
from aiestack.evals.metrics import build_metric

pytestmark = pytest.mark.unit

SCRIPT = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
INSERT INTO users VALUES (1, 'ana', 'US'), (2, 'bo', 'DE'), (3, 'eli', 'DE');
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL);
INSERT INTO orders VALUES (1, 1, 10.5), (2, 2, 7.25), (3, 2, 1.0);
"""
REF = "SELECT name FROM users WHERE country = 'DE'"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sql"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "output",
    [
        "SELECT name FROM users WHERE country = 'DE'",
        "select u.name from users u where u.country in ('DE');",  # another formulation, same rows
        "```sql\nSELECT name FROM users WHERE country='DE' ORDER BY name DESC\n```",  # order does not matter
        "Here is the query:\n```sql\nSELECT name FROM users WHERE id > 1\n```\nIt lists them.",
    ],
)
async def test_queries_returning_the_reference_rows_pass(db: Path, make_sample, output: str) -> None:
    metric = build_metric("sql_execution", {"database": db.name}, base_dir=db.parent)
    score = await metric.score(make_sample(output, REF))
    assert score.value == 1.0, score.detail


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("SELECT name FROM users", "different rows"),
        ("SELECT name, country FROM users WHERE country = 'DE'", "different rows"),
        ("SELECT nme FROM users", "the query fails"),
        ("DROP TABLE users", "the query fails"),
        ("DELETE FROM users", "the query fails"),
        ("ATTACH DATABASE 'x.db' AS x", "the query fails"),
        ("SELECT name FROM users WHERE country = 'DE'; DELETE FROM users", "the query fails"),
        ("I cannot answer that.", "the query fails"),
    ],
)
async def test_wrong_or_writing_queries_fail_and_leave_the_data_alone(db: Path, make_sample, output: str, reason: str) -> None:
    metric = build_metric("sql_execution", {"database": str(db)})
    score = await metric.score(make_sample(output, REF))
    assert score.value == 0.0 and score.detail["reason"].startswith(reason)
    again = await metric.score(make_sample("SELECT count(*) FROM users", "SELECT 3"))
    assert again.value == 1.0  # every row is still there


async def test_a_sqlite_file_is_opened_read_only_and_ordered_compares_the_order(tmp_path: Path, make_sample) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as con:
        con.executescript(SCRIPT)
    con.close()
    metric = build_metric("sql_execution", {"database": str(path), "ordered": True})
    ref = "SELECT id FROM orders ORDER BY total DESC"
    assert (await metric.score(make_sample("SELECT id FROM orders ORDER BY total DESC", ref))).value == 1.0
    assert (await metric.score(make_sample("SELECT id FROM orders ORDER BY total", ref))).value == 0.0
    assert (await metric.score(make_sample("INSERT INTO orders VALUES (9, 1, 1)", ref))).value == 0.0
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchone() == (3,)
    con.close()


async def test_a_runaway_query_is_stopped(db: Path, make_sample) -> None:
    metric = build_metric("sql_execution", {"database": str(db), "timeout_s": 0.2})
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    score = await metric.score(make_sample(forever, REF))
    assert score.value == 0.0 and "interrupted" in score.detail["reason"]


async def test_a_broken_reference_is_not_applicable_and_a_missing_database_is_a_config_error(
    db: Path, make_sample
) -> None:
    metric = build_metric("sql_execution", {"database": str(db)})
    score = await metric.score(make_sample("SELECT 1", "SELECT * FROM nowhere"))
    assert score.value is None and "reference SQL fails" in (score.error or "")
    with pytest.raises(ConfigError, match=r"metrics\.sql_execution\.database"):
        build_metric("sql_execution", {"database": "missing.sql"}, base_dir=db.parent)
