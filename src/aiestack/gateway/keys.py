"""Virtual keys and tenants: issuing keys, authenticating callers, and the admin key.

A virtual key belongs to a tenant and carries its own limits (RPM, TPM, daily/monthly USD budget)
and an optional model allowlist. Its secret (``aie-`` + 40 URL-safe characters, 240 random bits)
is shown once when created and never stored: the store keeps its SHA-256, which is what a lookup
uses. Because the secret has that much entropy, a fast unsalted hash is the right tool here (a
slow password hash protects low-entropy passwords, and would cost every request milliseconds).

Authentication is cached for a few seconds, positive and negative lookups alike, so a gateway
under load (or under a flood of bad keys) touches the store at most once per key per interval;
the price is that a revoke takes effect within that interval, not at once.

The admin key comes from the environment (``AIESTACK_ADMIN_KEY``), never from the config file.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from aiestack.errors import AuthError, InvalidRequest, NotFound, PermissionDenied, RateLimited, StoreError
from aiestack.stores.base import (
    USAGE_GROUPS,
    KeyRecord,
    KeyStore,
    UsageRow,
    UsageStore,
    check_usage_groups,
)
from aiestack.stores.kv import KV
from aiestack.types import new_id

AuthMode = Literal["auto", "required", "off"]

SECRET_PREFIX = "aie-"
#: 30 random bytes are 40 URL-safe base64 characters.
_SECRET_BYTES = 30
#: How much of the secret is kept for display: "aie-" and six characters.
_DISPLAY_CHARS = 10
ANONYMOUS_TENANT = "default"
ADMIN_TENANT = "admin"

_CREATE_HINT = "An administrator creates keys with `aiestack keys create --tenant NAME`."


# --------------------------------------------------------------------------- errors


class AdminRequired(PermissionDenied):
    code = "admin_required"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class KeyNotFound(NotFound):
    code = "key_not_found"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a virtual key's tenant, the admin, or the anonymous local user."""

    key_id: str | None  # None when auth is off / anonymous local mode
    tenant: str  # "default" when anonymous
    is_admin: bool = False
    models: tuple[str, ...] = ()  # allowed models/routes; empty = all


ANONYMOUS = Principal(key_id=None, tenant=ANONYMOUS_TENANT)
ADMIN = Principal(key_id=None, tenant=ADMIN_TENANT, is_admin=True)


def hash_secret(secret: str) -> str:
    """The SHA-256 (hex) under which a key's secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_key(key: KeyRecord) -> str:
    """How a key is named to people: its prefix, never the whole secret."""
    return f"{key.prefix}…"


K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A small cache whose entries live ``ttl_s`` seconds, holding at most ``max_entries``.

    The bound matters for negative entries: a client sending random keys must not grow memory
    without limit. When full, the oldest entry goes first.
    """

    def __init__(
        self, ttl_s: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` for a live entry, ``(False, None)`` otherwise."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry[0] <= self._clock():
            del self._entries[key]
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V) -> None:
        if self._ttl_s <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        self._entries[key] = (self._clock() + self._ttl_s, value)


# --------------------------------------------------------------------------- authentication


def _presented_secret(authorization: str | None) -> str | None:
    """The secret in an ``Authorization`` header value: ``Bearer <secret>`` or the bare secret."""
    if authorization is None:
        return None
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or raises :class:`AuthError`.

    ``mode``: ``"off"`` treats every caller as anonymous (the admin key is still recognised);
    ``"required"`` needs a valid key or the admin key; ``"auto"`` (the default) needs one as soon
    as any key exists, and is anonymous before that, so a fresh local install just works with
    any OpenAI client (which always sends some placeholder key).
    """

    def __init__(
        self,
        keys: KeyStore,
        *,
        admin_key: str | None,
        mode: AuthMode = "auto",
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("auto", "required", "off"):
            raise ValueError(f"mode must be 'auto', 'required' or 'off', got {mode!r}")
        self._keys = keys
        self._admin_key = admin_key.encode() if admin_key else None
        self._mode = mode
        self._cache: TTLCache[str, KeyRecord | None] = TTLCache(cache_ttl_s, clock=clock)
        self._has_keys_cache: TTLCache[None, bool] = TTLCache(cache_ttl_s, clock=clock)

    async def authenticate(self, authorization: str | None) -> Principal:
        secret = _presented_secret(authorization)
        if (
            secret is not None
            and self._admin_key is not None
            and hmac.compare_digest(secret.encode(), self._admin_key)
        ):
            return ADMIN
        if self._mode == "off" or (self._mode == "auto" and not await self._any_keys()):
            return ANONYMOUS
        if secret is None:
            raise AuthError(
                "This gateway requires an API key, and the request carried none.",
                hint=f"Send it as 'Authorization: Bearer aie-…' (an OpenAI client's api_key). {_CREATE_HINT}",
            )
        record = await self._lookup(secret)
        if record is None:
            raise AuthError(
                "The API key sent is not valid.",
                hint="Check it for typos or truncation: a key is 'aie-' followed by 40 characters. "
                + _CREATE_HINT,
            )
        if record.revoked:
            raise AuthError(
                f"The API key {display_key(record)} was revoked.",
                hint=f"Use another key of tenant '{record.tenant}'. {_CREATE_HINT}",
            )
        return Principal(key_id=record.id, tenant=record.tenant, models=record.models)

    def require_admin(self, principal: Principal) -> None:
        if not principal.is_admin:
            raise AdminRequired(
                "This endpoint needs the admin key.",
                hint="Send 'Authorization: Bearer <admin key>'; the server reads it from AIESTACK_ADMIN_KEY.",
            )

    async def _lookup(self, secret: str) -> KeyRecord | None:
        digest = hash_secret(secret)
        hit, record = self._cache.get(digest)
        if not hit:
            record = await asyncio.to_thread(self._keys.find_key, digest)
            self._cache.put(digest, record)
        # The store matched by equality; compare again in constant time so that no backend's
        # comparison (collations, prefix indexes) decides on its own.
        if record is not None and hmac.compare_digest(record.secret_hash, digest):
            return record
        return None

    async def _any_keys(self) -> bool:
        hit, known = self._has_keys_cache.get(None)
        if hit and known is not None:
            return known
        found = await asyncio.to_thread(self._keys.has_keys)
        self._has_keys_cache.put(None, found)
        return found


# --------------------------------------------------------------------------- administration


class KeyService:
    """Creating, listing and revoking keys, and usage summaries: what the CLI and admin API call.

    Synchronous, like the stores: the CLI calls it directly, the server from a thread.
    """

    def __init__(self, keys: KeyStore, usage: UsageStore, *, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._usage = usage
        self._clock = clock

    def create(
        self,
        *,
        tenant: str,
        name: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_day_usd: float | None = None,
        budget_month_usd: float | None = None,
        models: Sequence[str] = (),
    ) -> tuple[KeyRecord, str]:
        """A new key and its secret. The secret is returned only here: show it once, then drop it."""
        tenant = tenant.strip()
        if not tenant:
            raise InvalidRequest(
                "A key needs a tenant.", hint="Pass --tenant NAME (e.g. a team or customer)."
            )
        for label, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise InvalidRequest(
                    f"The {label.upper()} limit must be at least 1, got {limit}.",
                    hint=f"Leave --{label} out for no limit.",
                )
        for label, budget in (("daily", budget_day_usd), ("monthly", budget_month_usd)):
            if budget is not None and (not math.isfinite(budget) or budget < 0):
                raise InvalidRequest(
                    f"The {label} budget must be a non-negative amount in USD, got {budget}.",
                    hint="Leave --budget-usd out for no budget.",
                )
        secret = SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
        record = KeyRecord(
            id=new_id("key"),
            tenant=tenant,
            secret_hash=hash_secret(secret),
            prefix=secret[:_DISPLAY_CHARS],
            created_at=self._clock(),
            name=(name or "").strip() or None,
            rpm=rpm,
            tpm=tpm,
            budget_day_usd=budget_day_usd,
            budget_month_usd=budget_month_usd,
            models=tuple(dict.fromkeys(m.strip() for m in models if m.strip())),
        )
        self._keys.add_key(record)
        return record, secret

    def list(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        return self._keys.list_keys(tenant=tenant, include_revoked=include_revoked)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key (again is fine: it keeps its first revocation time)."""
        record = self._keys.revoke_key(key_id, at=self._clock())
        if record is None:
            raise KeyNotFound(
                f"No API key has the id {key_id!r}.",
                hint="Key ids look like key_…; list them with `aiestack keys list --all`.",
            )
        return record

    def usage(
        self, *, by: Sequence[str], since: float | None = None, until: float | None = None
    ) -> builtins.list[UsageRow]:
        """Requests, tokens, cost and errors grouped by ``by`` (any of key, tenant, model, day)."""
        try:
            groups = check_usage_groups(by)
        except ValueError as exc:
            raise InvalidRequest(
                f"Cannot group usage that way: {exc}.",
                hint=f"Use a comma-separated subset of {', '.join(USAGE_GROUPS)}.",
            ) from None
        if since is not None and until is not None and until <= since:
            raise InvalidRequest(
                "The usage period is empty: 'until' is not after 'since'.", hint="Swap or widen the dates."
            )
        return self._usage.usage_summary(by=groups, since=since, until=until)


# --------------------------------------------------------------------------- failed authentication


class TooManyFailedAuthentications(RateLimited):
    """A client address failed to authenticate too often (a wrong key, or a guess at the admin key)."""

    code = "too_many_failed_authentications"


class FailedAuthentications:
    """Counts failed authentications per client address, across processes (in the KV), and locks out
    an address after ``limit`` failures within ``window_s`` seconds: every API key, the admin key as a
    Bearer token and the console login count against the same number.

    A locked-out address gets :class:`TooManyFailedAuthentications` (HTTP 429 with ``Retry-After``)
    *before* its key is looked at, so a correct guess made while locked out does not succeed either.
    The address is the peer's, or the one a trusted proxy forwarded (``gateway.trusted_proxies``).
    """

    def __init__(self, kv: KV, *, limit: int = 10, window_s: float = 300.0, fail_open: bool = False) -> None:
        self._kv = kv
        self.limit = limit
        self.window_s = window_s
        #: When the KV cannot be reached: count nothing and let the key decide (as ``limits_fail_open``),
        #: rather than answer 503. Fail closed (the default) raises the KV's StoreError.
        self.fail_open = fail_open

    def _key(self, client: str) -> str:
        return f"authfail:{client}"

    async def check(self, client: str) -> None:
        """Raise :class:`TooManyFailedAuthentications` if ``client`` is locked out."""
        try:
            failures = await self._kv.get(self._key(client))
        except StoreError:
            if self.fail_open:
                return
            raise
        if failures is None or failures < self.limit:
            return
        window = await self._kv.window_add(self._key(client), 0, self.limit, self.window_s)
        raise TooManyFailedAuthentications(
            f"Too many failed authentications from {client}: try again in {math.ceil(window.retry_after_s)} s.",
            retry_after=max(1, math.ceil(window.retry_after_s)),
            hint="Check the API key (or admin key) the client sends; every failure counts.",
        )

    async def failed(self, client: str) -> None:
        try:
            await self._kv.window_add(self._key(client), 1, self.limit, self.window_s)
        except StoreError:
            if not self.fail_open:
                raise

    async def cleared(self, client: str) -> None:
        """Forget ``client``'s failures (after it logged in to the console with the admin key)."""
        await self._kv.delete(self._key(client))
