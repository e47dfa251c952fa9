"""Virtual keys: issued once and stored hashed, authenticated with caching, the admin key, auth modes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import fields

import pytest

from aiestack.errors import AuthError, InvalidRequest
from aiestack.gateway.keys import (
    ADMIN,
    ANONYMOUS,
    AdminRequired,
    Authenticator,
    KeyNotFound,
    KeyService,
    Principal,
    TTLCache,
)
from aiestack.stores.base import KeyRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.conformance import minimal_exchange

pytestmark = pytest.mark.unit

ADMIN_KEY = "admin-secret-for-tests-0123456789"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryExchangeStore):
    """Counts the key lookups that reach the store, to see what the cache saves."""

    def __init__(self) -> None:
        super().__init__()
        self.finds = 0
        self.has_keys_calls = 0

    def find_key(self, secret_hash: str) -> KeyRecord | None:
        self.finds += 1
        return super().find_key(secret_hash)

    def has_keys(self) -> bool:
        self.has_keys_calls += 1
        return super().has_keys()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


class Ticking(Clock):
    """A clock that moves one second on each reading: keys get distinct creation times."""

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def service(store: CountingStore) -> KeyService:
    return KeyService(store, store, clock=Ticking(1_750_000_000.0))


def authenticator(store: CountingStore, clock: Clock | None = None, **kwargs: object) -> Authenticator:
    return Authenticator(store, admin_key=ADMIN_KEY, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- issuing keys


def test_a_new_key_has_a_strong_secret_that_is_stored_only_as_its_hash(
    service: KeyService, store: CountingStore
) -> None:
    record, secret = service.create(tenant="acme", name="ci bot", rpm=60, models=["m1", " m2 ", "m1", ""])
    assert re.fullmatch(r"aie-[A-Za-z0-9_-]{40}", secret)
    assert record.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(record.prefix) and len(record.prefix) < len(secret) // 3
    assert record.models == ("m1", "m2") and record.name == "ci bot" and record.tenant == "acme"
    assert record.created_at == 1_750_000_001.0 and record.id.startswith("key_")
    stored = store.get_key(record.id)
    assert stored == record
    assert all(secret not in str(getattr(stored, f.name)) for f in fields(KeyRecord))


def test_every_key_gets_its_own_secret_and_id(service: KeyService) -> None:
    issued = [service.create(tenant="t") for _ in range(20)]
    assert len({secret for _, secret in issued}) == 20
    assert len({record.id for record, _ in issued}) == 20


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"tenant": "  "}, "tenant"),
        ({"rpm": 0}, "RPM limit must be at least 1"),
        ({"tpm": -5}, "TPM limit must be at least 1"),
        ({"budget_day_usd": -1.0}, "daily budget"),
        ({"budget_month_usd": float("nan")}, "monthly budget"),
    ],
)
def test_invalid_keys_are_refused_with_a_hint(
    service: KeyService, changes: dict[str, object], says: str
) -> None:
    arguments: dict[str, object] = {"tenant": "acme", **changes}
    with pytest.raises(InvalidRequest, match=says) as raised:
        service.create(**arguments)  # type: ignore[arg-type]
    assert raised.value.hint
    assert service.list(include_revoked=True) == []


def test_list_and_revoke(service: KeyService) -> None:
    a, _ = service.create(tenant="acme")
    b, _ = service.create(tenant="beta")
    assert [k.id for k in service.list()] == [a.id, b.id]
    assert [k.id for k in service.list(tenant="beta")] == [b.id]
    revoked = service.revoke(a.id)
    assert revoked.revoked and revoked.id == a.id
    assert [k.id for k in service.list()] == [b.id]
    assert [k.id for k in service.list(include_revoked=True)] == [a.id, b.id]
    assert service.revoke(a.id).revoked_at == revoked.revoked_at  # again is harmless


def test_revoking_an_unknown_key_is_a_404_with_a_hint(service: KeyService) -> None:
    with pytest.raises(KeyNotFound) as raised:
        service.revoke("key_nope")
    error = raised.value
    assert isinstance(error, InvalidRequest) and error.http_status == 404 and error.code == "key_not_found"
    assert "key_nope" in error.message and "aiestack keys list" in (error.hint or "")


def test_usage_is_summarised_and_its_arguments_checked(service: KeyService, store: CountingStore) -> None:
    store.write_exchanges(
        [
            minimal_exchange("ex_1", created_at=100.0, key_id="key_a", cost_usd=0.5, outcome="ok"),
            minimal_exchange("ex_2", created_at=200.0, key_id="key_a", cost_usd=0.25),
            minimal_exchange("ex_3", created_at=300.0, key_id="key_b", cost_usd=1.0, outcome="ok"),
        ]
    )
    rows = service.usage(by=["key"], since=150.0)
    assert [(r.key_id, r.requests, r.errors, r.cost_usd) for r in rows] == [
        ("key_a", 1, 1, 0.25),
        ("key_b", 1, 0, 1.0),
    ]
    with pytest.raises(InvalidRequest, match="colour"):
        service.usage(by=["colour"])
    with pytest.raises(InvalidRequest, match="empty"):
        service.usage(by=["key"], since=10.0, until=10.0)


# --------------------------------------------------------------------------- authentication


async def test_a_valid_key_authenticates_as_its_tenant(service: KeyService, store: CountingStore) -> None:
    record, secret = service.create(tenant="acme", models=["m1"])
    auth = authenticator(store)
    expected = Principal(key_id=record.id, tenant="acme", models=("m1",))
    assert await auth.authenticate(f"Bearer {secret}") == expected
    assert await auth.authenticate(f"bearer   {secret} ") == expected
    assert await auth.authenticate(secret) == expected  # the bare secret (e.g. from x-api-key)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   "])
async def test_a_missing_key_is_refused_once_keys_exist(
    service: KeyService, store: CountingStore, header: str | None
) -> None:
    service.create(tenant="acme")
    with pytest.raises(AuthError) as raised:
        await authenticator(store).authenticate(header)
    assert raised.value.http_status == 401 and "Authorization: Bearer" in (raised.value.hint or "")


async def test_an_unknown_key_is_refused_without_echoing_it(
    service: KeyService, store: CountingStore
) -> None:
    _, secret = service.create(tenant="acme")
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(AuthError) as raised:
        await authenticator(store).authenticate(f"Bearer {wrong}")
    assert wrong not in str(raised.value) and wrong[4:12] not in str(raised.value)
    assert "aiestack keys create" in (raised.value.hint or "")


async def test_auto_mode_is_open_until_the_first_key_exists(
    service: KeyService, store: CountingStore
) -> None:
    auth = authenticator(store, cache_ttl_s=0)
    assert await auth.authenticate(None) == ANONYMOUS
    assert await auth.authenticate("Bearer sk-placeholder") == ANONYMOUS  # OpenAI clients always send one
    record, _ = service.create(tenant="acme")
    with pytest.raises(AuthError):
        await auth.authenticate("Bearer sk-placeholder")
    service.revoke(record.id)
    with pytest.raises(AuthError):  # revoking the last key must not open the gateway again
        await auth.authenticate(None)


async def test_required_mode_needs_a_key_even_before_any_exists(store: CountingStore) -> None:
    with pytest.raises(AuthError):
        await authenticator(store, mode="required").authenticate(None)
    assert await authenticator(store, mode="required").authenticate(f"Bearer {ADMIN_KEY}") == ADMIN


async def test_off_mode_is_anonymous_but_still_knows_the_admin(
    service: KeyService, store: CountingStore
) -> None:
    _, secret = service.create(tenant="acme")
    auth = authenticator(store, mode="off")
    assert await auth.authenticate(None) == ANONYMOUS
    assert await auth.authenticate(f"Bearer {secret}") == ANONYMOUS
    assert await auth.authenticate("Bearer junk") == ANONYMOUS
    assert await auth.authenticate(f"Bearer {ADMIN_KEY}") == ADMIN
    assert store.finds == 0


def test_an_unknown_mode_is_refused(store: CountingStore) -> None:
    with pytest.raises(ValueError, match="mode"):
        authenticator(store, mode="sometimes")


async def test_the_admin_key_and_require_admin(service: KeyService, store: CountingStore) -> None:
    _, secret = service.create(tenant="acme")
    auth = authenticator(store)
    admin = await auth.authenticate(f"Bearer {ADMIN_KEY}")
    assert admin.is_admin and admin.tenant == "admin" and admin.key_id is None
    auth.require_admin(admin)
    for principal in (await auth.authenticate(secret), ANONYMOUS):
        with pytest.raises(AdminRequired) as raised:
            auth.require_admin(principal)
        error = raised.value
        assert (error.http_status, error.error_type, error.code) == (
            403,
            "permission_error",
            "admin_required",
        )
    with pytest.raises(AuthError):  # almost the admin key is no key at all
        await auth.authenticate(f"Bearer {ADMIN_KEY}x")
    no_admin = Authenticator(store, admin_key=None)
    with pytest.raises(AuthError):
        await no_admin.authenticate("Bearer ")
    with pytest.raises(AuthError):
        await Authenticator(store, admin_key="").authenticate("Bearer x")


async def test_lookups_are_cached_and_a_revoke_lands_within_the_ttl(
    service: KeyService, store: CountingStore
) -> None:
    record, secret = service.create(tenant="acme")
    clock = Clock()
    auth = authenticator(store, clock, cache_ttl_s=5.0)
    for _ in range(10):
        assert (await auth.authenticate(secret)).key_id == record.id
    assert store.finds == 1
    service.revoke(record.id)
    clock.now += 4.0
    assert (await auth.authenticate(secret)).key_id == record.id  # still cached
    clock.now += 1.5
    with pytest.raises(AuthError, match="revoked"):
        await auth.authenticate(secret)
    assert store.finds == 2


async def test_bad_keys_are_cached_too(service: KeyService, store: CountingStore) -> None:
    service.create(tenant="acme")
    clock = Clock()
    auth = authenticator(store, clock, cache_ttl_s=5.0)
    for _ in range(10):
        with pytest.raises(AuthError):
            await auth.authenticate("Bearer aie-not-a-real-key")
    assert store.finds == 1 and store.has_keys_calls == 1
    clock.now += 6
    with pytest.raises(AuthError):
        await auth.authenticate("Bearer aie-not-a-real-key")
    assert store.finds == 2


def test_the_ttl_cache_is_bounded_and_expires() -> None:
    clock = Clock(0.0)
    cache: TTLCache[str, int] = TTLCache(10.0, max_entries=3, clock=clock)
    for i in range(5):
        cache.put(f"k{i}", i)
    assert [cache.get(f"k{i}") for i in range(5)] == [(False, None)] * 2 + [(True, 2), (True, 3), (True, 4)]
    clock.now = 10.0
    assert cache.get("k4") == (False, None)
    off: TTLCache[str, int] = TTLCache(0.0, clock=clock)
    off.put("k", 1)
    assert off.get("k") == (False, None)
