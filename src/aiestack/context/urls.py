"""Fetching URLs for ingestion, safe against server-side request forgery (SSRF).

A URL given to ``aiestack ingest`` (or to a server that ingests on a user's behalf) must not become a
way to read the internal network: the cloud metadata service at 169.254.169.254, an admin panel on
localhost, a database on 10.0.0.5. So every connection, the first and each one after a redirect, goes
through :class:`_GuardedBackend`, which resolves the host itself, refuses the connection if *any*
address the name resolves to is not public, and then connects to the very address it checked (so a
DNS answer that changes between check and connect, "DNS rebinding", cannot slip through).

Refused unless ``allow_private``: private (RFC 1918, fc00::/7), site-local (fec0::/10), any IPv6 address
outside global unicast 2000::/3, loopback, link-local, shared
(100.64/10), unspecified, reserved and documentation ranges, in IPv4 and IPv6, including IPv4 addresses
embedded in IPv6 (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``, 6to4, Teredo). Multicast is refused
always. Responses are limited in size (``max_bytes``) and time (``timeout_s`` for the whole fetch),
and redirects are followed at most ``max_redirects`` times.

The transport is httpcore (the engine under httpx) with a network backend of our own: that is the one
place where the address a connection really goes to can be checked.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from aiestack.context.loaders import Kind, kind_of
from aiestack.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: The only IPv6 block handed out as global unicast (RFC 4291 §2.4); everything else is local, reserved
#: or special-purpose, including what :mod:`ipaddress` still calls global: site-local ``fec0::/10``.
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
#: Special-purpose blocks inside 2000::/3 that ``ipaddress`` does not flag (documentation, RFC 9637).
_NOT_PUBLIC_V6 = (ipaddress.ip_network("3fff::/20"),)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class UnsafeURL(InvalidRequest):
    """The URL leads to an address that ingestion may not reach, or is not an http(s) URL."""

    code = "unsafe_url"


class FetchError(InvalidRequest):
    """The URL could not be fetched (connection, status, size or time limit)."""

    code = "fetch_failed"


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo client), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_problem(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why ingestion may not connect to ``ip`` (e.g. ``"loopback"``), or None when it may."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        problem = address_problem(inner, allow_private=allow_private)
        return f"{problem} (IPv4 {inner} inside IPv6)" if problem else None
    if ip.is_multicast:
        return "multicast"
    if allow_private:
        return None
    for attr in ("is_loopback", "is_link_local", "is_unspecified", "is_reserved", "is_private"):
        if getattr(ip, attr):
            return attr.removeprefix("is_").replace("_", "-")
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:
            return "site-local"
        if ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _NOT_PUBLIC_V6):
            return "not a global unicast address"
    if not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True, slots=True)
class URLPolicy:
    """Which addresses a fetch may connect to, and its limits."""

    allow_private: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 30.0
    max_redirects: int = 5
    resolver: Resolver | None = field(default=None, compare=False)

    @classmethod
    def allowing(cls, networks: Iterable[str], **kwargs: Any) -> URLPolicy:
        return cls(allowed_networks=tuple(ipaddress.ip_network(n) for n in networks), **kwargs)

    def check(self, ip: IPAddress) -> str | None:
        if any(ip in net for net in self.allowed_networks):
            return None
        return address_problem(ip, allow_private=self.allow_private)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``; raises :class:`UnsafeURL` if any of them is refused."""
        try:
            addresses = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            names = (self.resolver or _system_resolver)(host, port)
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in names]
        if not addresses:
            raise FetchError(f"The host {host} has no address.", hint="Check the URL.")
        for ip in addresses:
            problem = self.check(ip)
            if problem:
                raise UnsafeURL(
                    f"Refusing to fetch from {host} ({ip}): {problem}.",
                    hint="Only public addresses are fetched. To reach private, loopback or link-local hosts on "
                    "purpose: `aiestack ingest --allow-private`, or URLPolicy(allow_private=True) in Python "
                    "(ingest's IngestOptions(urls=...), fetch_url_tool(policy=...)).",
                )
        return addresses


def _system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"Cannot resolve {host}: {exc.strerror}.", hint="Check the host name.") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _GuardedBackend(httpcore.NetworkBackend):
    """A network backend that connects only to addresses the policy allows (checked at connect time)."""

    def __init__(self, policy: URLPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._policy.resolve(host, port)
        error: Exception | None = None
        for ip in addresses:
            try:
                return self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise UnsafeURL("Unix sockets are never fetched.")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def check_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; raises :class:`UnsafeURL` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL(
            f"Only http and https URLs are fetched, not {url!r}.", hint="Give a full http(s):// URL."
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL(f"The URL {url!r} has an invalid port.") from None
    return parts.scheme, parts.hostname, port


def fetch(url: str, policy: URLPolicy | None = None, *, headers: Sequence[tuple[str, str]] = ()) -> Fetched:
    """GET ``url`` within ``policy``, following redirects (each one re-checked); raises on any refusal."""
    policy = policy or URLPolicy()
    deadline = time.monotonic() + policy.timeout_s
    hdrs = [("User-Agent", "aiestack-ingest/1"), ("Accept", "*/*"), *headers]
    with httpcore.ConnectionPool(network_backend=_GuardedBackend(policy), ssl_context=_ssl_context()) as pool:
        for _ in range(policy.max_redirects + 1):
            check_url(url)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"Fetching {url} took longer than {policy.timeout_s:g} s.")
            timeouts = {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}
            try:
                with pool.stream("GET", url, headers=hdrs, extensions={"timeout": timeouts}) as response:
                    location = _header(response.headers, b"location")
                    if response.status in _REDIRECTS and location:
                        url = urljoin(url, location)
                        continue
                    if response.status >= 400:
                        raise FetchError(f"{url} answered HTTP {response.status}.", hint="Check the URL.")
                    body = _read_limited(response, url, policy, deadline)
                    return Fetched(url, response.status, _header(response.headers, b"content-type"), body)
            except httpcore.TimeoutException:
                raise FetchError(f"Fetching {url} took longer than {policy.timeout_s:g} s.") from None
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                raise FetchError(f"Cannot fetch {url}: {exc or type(exc).__name__}.") from None
            except httpcore.UnsupportedProtocol:
                raise UnsafeURL(f"Only http and https URLs are fetched, not {url!r}.") from None
    raise FetchError(f"{url}: more than {policy.max_redirects} redirects.", hint="Give the final URL.")


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _read_limited(response: httpcore.Response, url: str, policy: URLPolicy, deadline: float) -> bytes:
    declared = _header(response.headers, b"content-length")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(f"{url} is {int(declared)} bytes, more than the limit of {policy.max_bytes}.")
    parts: list[bytes] = []
    size = 0
    for part in response.iter_stream():
        size += len(part)
        if size > policy.max_bytes:
            raise FetchError(f"{url} is larger than the limit of {policy.max_bytes} bytes.")
        if time.monotonic() > deadline:
            raise FetchError(f"Fetching {url} took longer than {policy.timeout_s:g} s.")
        parts.append(part)
    return b"".join(parts)


def kind_for_content_type(content_type: str, url: str) -> Kind | None:
    """The loader kind for a fetched body: by media type, else by the URL path's extension."""
    media = content_type.split(";", 1)[0].strip().lower()
    by_type: dict[str, Kind] = {
        "text/html": "html",
        "application/xhtml+xml": "html",
        "application/pdf": "pdf",
        "text/markdown": "markdown",
        "text/x-markdown": "markdown",
        "application/json": "records",
        "application/x-ndjson": "records",
        "application/jsonl": "records",
        "text/plain": "text",
    }
    if media in by_type and not (
        media == "text/plain" and urlsplit(url).path.lower().endswith((".md", ".markdown"))
    ):
        return by_type[media]
    return kind_of(urlsplit(url).path) or ("text" if media.startswith("text/") else None)
