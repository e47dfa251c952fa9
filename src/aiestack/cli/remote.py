"""A running aiestack server, used by CLI commands instead of loading the models in the command.

``aiestack search`` loads the embedding model and opens the store on every run (seconds) for a
query the server answers in milliseconds. So it first looks for a server: ``--server URL`` or
``AIESTACK_URL`` when given (then it must answer), else ``http://127.0.0.1:8000`` when one answers
there within a fraction of a second *and* reads the same store as this configuration (the server
sends a fingerprint of its store URL, ``x-aiestack-store``; a server of another deployment is never
used by surprise). The key sent is ``AIESTACK_API_KEY``, else the admin key's variable, else none
(a server in open mode). ``--local`` skips the server. It speaks HTTP with the standard library:
the command's start-up time is what this saves, and httpx alone costs a quarter of a second to import.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiestack.errors import AiestackError, InvalidRequest, NotFound

if TYPE_CHECKING:
    from aiestack.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
STORE_HEADER = "x-aiestack-store"  # what aiestack.server.routes_collections sends
#: How long an unasked-for probe of the default address may take (nothing listening fails at once).
PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Remote:
    """A server this command talks to (``url`` without ``/v1``)."""

    url: str
    key: str | None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 60.0) -> _Answer:
        """One HTTP request; an error status is an answer, no answer at all raises :class:`OSError`."""
        headers = {"authorization": f"Bearer {self.key}"} if self.key else {}
        data = None
        if body is not None:
            data, headers["content-type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return _Answer(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
        except urllib.error.HTTPError as exc:
            return _Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

    def search(self, collection: str, query: str, *, mode: str, k: int, filter: dict[str, Any] | None) -> dict[str, Any]:
        """``POST /v1/collections/NAME/search``; the server's errors come back as :class:`AiestackError`."""
        body = {"query": query, "mode": mode, "k": k, "filter": filter}
        try:
            answer = self.request("POST", f"/v1/collections/{urllib.parse.quote(collection, safe='')}/search", body)
        except OSError as exc:
            raise AiestackError(f"The server at {self.url} did not answer: {exc}.",
                                hint="Start it with `aiestack serve`, or search in-process with --local.") from None
        if answer.status == 404:
            raise NotFound(_message(answer), hint="GET /v1/collections lists this key's collections; --local searches in-process.")
        if answer.status >= 400:
            raise InvalidRequest(f"The server at {self.url} refused the search: {_message(answer)}",
                                 hint="Set AIESTACK_API_KEY to a key of the collection's tenant, or use --local.")
        result: dict[str, Any] = answer.json()
        return result


def _message(answer: _Answer) -> str:
    try:
        return str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {answer.status}"


def find_server(settings: Settings, url: str | None, *, local: bool) -> Remote | None:
    """The server to use, or ``None`` to work in-process (see the module's docstring)."""
    if local:
        return None
    asked = url or os.environ.get("AIESTACK_URL") or None
    key = os.environ.get("AIESTACK_API_KEY") or os.environ.get(settings.gateway.admin_key_env) or None
    remote = Remote((asked or DEFAULT_URL).rstrip("/").removesuffix("/v1"), key)
    try:
        probe = remote.request("GET", "/v1/collections", timeout=10.0 if asked else PROBE_TIMEOUT_S)
    except OSError as exc:  # refused, unreachable, timed out
        if asked:
            raise AiestackError(f"The server at {remote.url} did not answer: {exc}.",
                                hint="Start it with `aiestack serve`, or search in-process with --local.") from None
        return None
    if asked:
        if probe.status >= 400:
            raise InvalidRequest(f"The server at {remote.url} refused to list collections: {_message(probe)}",
                                 hint="Set AIESTACK_API_KEY to a key, or search in-process with --local.")
        return remote
    # unasked: only a server of this very deployment, that lets us in
    same = probe.headers.get(STORE_HEADER) == settings.store_fingerprint
    return remote if probe.status == 200 and same else None
