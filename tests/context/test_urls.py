"""SSRF protection: address checks, a 127.0.0.1 server refused by default, redirects re-checked, limits."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aiestack.context.urls import (
    FetchError,
    UnsafeURL,
    URLPolicy,
    address_problem,
    fetch,
    kind_for_content_type,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public address"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:169.254.169.254", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("64:ff9b::a00:1", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        # The class of fec0::/10: IPv6 that ipaddress calls global but is not global unicast.
        ("fec0::1", "site-local"),
        ("feff:ffff::1", "site-local"),
        ("64:ff9b:1::1", "reserved"),
        ("5f00::1", "reserved"),
        ("3fff::1", "not a global unicast address"),
        ("2001:db8::1", "private"),
    ],
)
def test_non_public_addresses_are_refused(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_every_ipv6_address_outside_global_unicast_is_refused() -> None:
    """A sweep over every /16 of IPv6: only 2000::/3 may pass, and only where it is public."""
    for first in range(0, 0x10000, 0x10):
        ip = ipaddress.IPv6Address(first << 112 | 0x1234)
        if address_problem(ip) is None:
            assert ip in ipaddress.ip_network("2000::/3"), ip


def test_allow_private_opens_private_ranges_but_never_multicast() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "::ffff:192.168.0.1"):
        assert address_problem(ipaddress.ip_address(address), allow_private=True) is None
    assert address_problem(ipaddress.ip_address("239.1.1.1"), allow_private=True) == "multicast"


def test_a_name_resolving_to_any_private_address_is_refused() -> None:
    policy = URLPolicy(resolver=lambda host, port: ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(UnsafeURL, match=r"10\.0\.0\.7.*private"):
        policy.resolve("mixed.example", 80)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/doc.md":
            body = b"# Title\n\nHello from the local server."
            self.send_response(200)
            self.send_header("Content-Type", "text/markdown; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()  # no Content-Length: the limit must hold while streaming
            for _ in range(64):
                self.wfile.write(b"x" * 1024)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_loopback_server_is_refused_by_default_and_reached_when_allowed(server: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        fetch(f"{server}/doc.md")
    hint = info.value.hint or ""
    assert "loopback" in info.value.message and "--allow-private" in hint and "URLPolicy(allow_private=True)" in hint  # CLI and Python
    got = fetch(f"{server}/doc.md", URLPolicy(allow_private=True))
    assert got.status == 200 and got.body.startswith(b"# Title")
    assert kind_for_content_type(got.content_type, got.url) == "markdown"


def test_every_redirect_is_checked_again(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    only_this_host = URLPolicy.allowing(["127.0.0.1/32"])
    assert fetch(f"{server}/redirect?to=/doc.md", only_this_host).url == f"{server}/doc.md"
    with pytest.raises(UnsafeURL, match=r"127\.0\.0\.2"):
        fetch(f"{server}/redirect?to=http://127.0.0.2:{port}/doc.md", only_this_host)


def test_non_http_schemes_are_refused(server: str) -> None:
    with pytest.raises(UnsafeURL, match="http and https"):
        fetch("file:///etc/passwd")
    with pytest.raises(UnsafeURL, match="http and https"):
        fetch(f"{server}/redirect?to=file:///etc/passwd", URLPolicy(allow_private=True))


def test_size_and_status_limits(server: str) -> None:
    with pytest.raises(FetchError, match="larger than the limit"):
        fetch(f"{server}/big", URLPolicy(allow_private=True, max_bytes=10_000))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{server}/missing", URLPolicy(allow_private=True))


def test_too_many_redirects(server: str) -> None:
    with pytest.raises(FetchError, match="redirects"):
        fetch(f"{server}/redirect?to=/redirect?to=/doc.md", URLPolicy(allow_private=True, max_redirects=1))
