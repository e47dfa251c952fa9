"""What ``aiestack serve`` checks before it listens: who can reach the server, and who it trusts.

*Open mode* is a gateway that serves without keys: ``gateway.auth = "off"``, or ``"auto"`` before the
first key exists. That is right on a laptop (any OpenAI client just works) and wrong on an address
other machines reach: anyone there could spend the models and read the console's data. So open mode
prints a warning at start, and on a non-loopback address the server refuses to start unless told to
(``--allow-open``).

Forwarding headers (``X-Forwarded-For``, ``X-Forwarded-Proto``) say who the client is only when a
trusted reverse proxy set them. uvicorn trusts them from 127.0.0.1 by default, which lets any local
caller pick its own address (and so step around per-address limits such as the admin-login
lockout). The server trusts them only from ``gateway.trusted_proxies``; none by default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from aiestack.settings import Settings

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an interface to listen on) is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


@dataclass(frozen=True, slots=True)
class Exposure:
    """The start-up verdict: a warning to print, and whether to refuse to start."""

    warning: str | None
    refuse: bool


def open_mode(settings: Settings, *, has_keys: bool) -> bool:
    """Whether the gateway would serve callers without a key."""
    auth = settings.gateway.auth
    return auth == "off" or (auth == "auto" and not has_keys)


def check_exposure(settings: Settings, host: str, *, has_keys: bool, allow_open: bool) -> Exposure:
    """Warn about open mode; refuse it on a non-loopback ``host`` unless ``allow_open``."""
    if not open_mode(settings, has_keys=has_keys):
        return Exposure(None, refuse=False)
    why = "gateway.auth is 'off'" if settings.gateway.auth == "off" else "no API key exists yet"
    local = is_loopback(host)
    warning = (
        f"Open mode: {why}, so every caller is served without a key"
        + (" (only this machine can reach it)." if local else f" by anyone who can reach {host}.")
        + " Create a key with `aiestack keys create --tenant NAME` to require keys."
    )
    return Exposure(warning, refuse=not local and not allow_open)


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy-header options: trust forwarding headers from the configured proxies only."""
    trusted = settings.gateway.trusted_proxies
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(trusted)}
