"""``aiestack keys`` and ``aiestack usage`` driven as a user would, over the SQLite store in a temp dir."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from aiestack.cli import keys as keys_cli
from aiestack.cli import usage as usage_cli
from aiestack.errors import InvalidRequest
from aiestack.gateway.keys import Authenticator, KeyNotFound
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.conformance import minimal_exchange

pytestmark = pytest.mark.unit

SECRET = re.compile(r"aie-[A-Za-z0-9_-]{40}")


def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
    keys_cli.register(app)
    usage_cli.register(app)
    return app


def run(*args: str) -> Result:
    return CliRunner().invoke(app(), list(args))


@pytest.fixture
def store(workdir: Path) -> Iterator[SqlExchangeStore]:
    """The store the commands use (AIESTACK_DATA_DIR points into the test's directory)."""
    store = SqlExchangeStore(f"sqlite:///{workdir / 'data' / 'aiestack.db'}")
    store.migrate()
    yield store
    store.close()


def create(*args: str) -> tuple[dict[str, object], str]:
    result = run("keys", "create", "--json", *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    return data, str(data["secret"])


# --------------------------------------------------------------------------- keys


async def test_create_prints_the_secret_once_and_it_works(store: SqlExchangeStore) -> None:
    result = run("keys", "create", "--tenant", "acme", "--rpm", "60", "--models", "m1,m2")
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert SECRET.fullmatch(secret)  # stdout is the secret alone: KEY=$(aiestack keys create ...)
    assert "shown only once" in result.stderr and "acme" in result.stderr and "60 rpm" in result.stderr
    principal = await Authenticator(store, admin_key=None).authenticate(f"Bearer {secret}")
    assert principal.tenant == "acme" and principal.models == ("m1", "m2")
    listed = run("keys", "list", "--json").stdout
    assert secret not in listed and secret[:10] in listed


def test_create_json_has_the_key_and_no_hash(store: SqlExchangeStore) -> None:
    data, secret = create(
        "--tenant", "acme", "--name", "ci", "--tpm", "1000", "--budget-usd", "5", "--budget-period", "day"
    )
    assert SECRET.fullmatch(secret)
    assert "secret_hash" not in data
    assert (data["tenant"], data["name"], data["tpm"], data["budget_day_usd"], data["budget_month_usd"]) == (
        "acme",
        "ci",
        1000,
        5.0,
        None,
    )
    record = store.get_key(str(data["id"]))
    assert record is not None and record.budget_day_usd == 5.0


def test_the_budget_is_monthly_unless_told(store: SqlExchangeStore) -> None:
    data, _ = create("--tenant", "acme", "--budget-usd", "20")
    assert (data["budget_month_usd"], data["budget_day_usd"]) == (20.0, None)


def test_create_refuses_bad_limits_before_touching_the_store(store: SqlExchangeStore) -> None:
    result = run("keys", "create", "--tenant", "acme", "--rpm", "0")
    assert result.exit_code == 2 and "--rpm" in result.output
    result = run("keys", "create", "--tenant", "  ")
    assert isinstance(result.exception, InvalidRequest)  # `aiestack` prints it with its hint
    assert store.list_keys(include_revoked=True) == []


def test_list_shows_limits_and_filters(store: SqlExchangeStore) -> None:
    a, _ = create(
        "--tenant", "acme", "--name", "bot", "--rpm", "60", "--budget-usd", "5", "--budget-period", "day"
    )
    b, _ = create("--tenant", "beta", "--models", "gpt-4o-mini")
    table = run("keys", "list").stdout
    assert str(a["id"]) in table and str(b["id"]) in table
    assert "60 rpm" in table and "$5/day" in table and "gpt-4o-mini" in table and "bot" in table
    only_beta = [
        json.loads(line)["id"]
        for line in run("keys", "list", "--tenant", "beta", "--json").stdout.splitlines()
    ]
    assert only_beta == [b["id"]]


def test_revoke_hides_the_key_unless_all_is_asked(store: SqlExchangeStore) -> None:
    a, _ = create("--tenant", "acme")
    b, _ = create("--tenant", "acme")
    result = run("keys", "revoke", str(a["id"]))
    assert result.exit_code == 0 and f"Revoked key {a['id']}" in result.stdout
    ids = [json.loads(line)["id"] for line in run("keys", "list", "--json").stdout.splitlines()]
    assert ids == [b["id"]]
    everything = run("keys", "list", "--all", "--json").stdout.splitlines()
    assert [json.loads(line)["revoked_at"] is not None for line in everything] == [True, False]
    assert "UTC" in run("keys", "list", "--all").stdout


def test_revoking_an_unknown_key_says_how_to_find_one(store: SqlExchangeStore) -> None:
    result = run("keys", "revoke", "key_nope")
    assert isinstance(result.exception, KeyNotFound)
    assert "aiestack keys list" in (result.exception.hint or "")


def test_an_empty_list_says_how_to_start(store: SqlExchangeStore) -> None:
    assert "aiestack keys create" in run("keys", "list").stdout


# --------------------------------------------------------------------------- usage

DAY1 = dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC).timestamp()
DAY2 = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def traffic(store: SqlExchangeStore) -> str:
    data, _ = create("--tenant", "acme", "--name", "bot")
    key = str(data["id"])
    store.write_exchanges(
        [
            minimal_exchange("ex_1", created_at=DAY1, key_id=key, tenant="acme", model="m1", outcome="ok",
                             input_tokens=100, output_tokens=10, cost_usd=0.25),
            minimal_exchange("ex_2", created_at=DAY1 + 60, key_id=key, tenant="acme", model="m1",
                             input_tokens=50, cost_usd=None),
            minimal_exchange("ex_3", created_at=DAY2, key_id=None, model="m2", outcome="ok",
                             input_tokens=7, output_tokens=3, cost_usd=1.5),
        ]
    )  # fmt: skip
    return key


def test_usage_by_key_and_day_as_json(traffic: str) -> None:
    result = run("usage", "--by", "day,key", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {"day": "2026-11-01", "key_id": traffic, "requests": 2, "input_tokens": 150, "output_tokens": 10,
         "cost_usd": 0.25, "errors": 1},
        {"day": "2026-11-02", "requests": 1, "input_tokens": 7, "output_tokens": 3, "cost_usd": 1.5, "errors": 0},
    ]  # fmt: skip


def test_usage_table_names_keys_and_totals(traffic: str) -> None:
    table = run("usage").stdout
    assert traffic in table and "bot" in table and "(no key)" in table
    assert "total" in table and "1.75 " in table and "157" in table  # cost and input tokens summed
    for header in ("requests", "input tokens", "output tokens", "cost USD", "errors"):
        assert header in table


def test_usage_dates_are_utc_and_until_includes_its_day(traffic: str) -> None:
    only_day1 = run("usage", "--by", "model", "--until", "2026-11-01", "--json").stdout.splitlines()
    assert [json.loads(line)["requests"] for line in only_day1] == [2]
    from_day2 = run("usage", "--by", "model", "--since", "2026-11-02", "--json").stdout.splitlines()
    assert [json.loads(line)["model"] for line in from_day2] == ["m2"]
    one_minute = run(
        "usage", "--by", "tenant", "--since", "2026-11-01T10:00", "--until", "2026-11-01T10:01", "--json"
    )
    assert [json.loads(line)["requests"] for line in one_minute.stdout.splitlines()] == [1]
    assert "No exchanges" in run("usage", "--since", "2030-01-01").stdout


def test_usage_refuses_bad_dates_and_groups(traffic: str) -> None:
    result = run("usage", "--since", "last tuesday")
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
    result = run("usage", "--by", "key,colour")
    assert isinstance(result.exception, InvalidRequest) and "colour" in result.exception.message
