"""``/v1/collections`` (list, search) and ``aiestack search`` through a running server.

A key sees and searches only its tenant's collections (another tenant's is a 404), the admin key
all of them; every answer names the store the server reads (a fingerprint), and the CLI uses a
server found on its own only when that fingerprint is its own configuration's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import aiestack.build
from aiestack.cli import build_app
from aiestack.cli import remote as remote_module
from aiestack.cli.remote import find_server
from aiestack.errors import AiestackError

from .conftest import ADMIN_KEY, Live, serve, settings
from .test_rag_api import rag_app

pytestmark = pytest.mark.integration


@pytest.fixture
def rag(tmp_path: Path) -> Iterator[Live]:
    with serve(rag_app(tmp_path)) as server:
        yield server


def _get(live: Live, path: str, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(live.base_url + path, headers=headers, timeout=20)


def _search(live: Live, name: str, body: dict[str, object], key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{live.base_url}/collections/{name}/search", json=body, headers=headers, timeout=20)


def test_open_mode_lists_and_searches_the_default_tenants_collections(rag: Live, tmp_path: Path) -> None:
    listed = _get(rag, "/collections")
    assert listed.status_code == 200
    assert [c["name"] for c in listed.json()["data"]] == ["kb"]  # acme-kb is another tenant's
    assert listed.headers["x-aiestack-store"] == settings(tmp_path).store_fingerprint
    found = _search(rag, "kb", {"query": "green tea temperature", "k": 2})
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert [h["rank"] for h in hits] == [1, 2]
    assert hits[0]["source"] == "docs/tea.md" and "80 degrees" in hits[0]["text"]
    assert {"score", "chunk_id", "document_id", "title", "retriever"} <= hits[0].keys()
    bm25 = _search(rag, "kb", {"query": "purr", "mode": "bm25", "k": 1}).json()
    assert [h["source"] for h in bm25["hits"]] == ["docs/cats.md"] and bm25["mode"] == "bm25"


def test_keys_see_only_their_tenants_collections_and_the_admin_all(rag: Live) -> None:
    _, acme = rag.stack.keys.create(tenant="acme")
    assert [c["name"] for c in _get(rag, "/collections", acme).json()["data"]] == ["acme-kb"]
    assert _search(rag, "acme-kb", {"query": "tea"}, acme).status_code == 200
    other = _search(rag, "kb", {"query": "tea"}, acme)
    assert other.status_code == 404 and "does not exist for this key" in other.json()["error"]["message"]
    assert _search(rag, "kb", {"query": "tea"}).status_code == 401  # keys exist now: no key, no search
    assert sorted(c["name"] for c in _get(rag, "/collections", ADMIN_KEY).json()["data"]) == ["acme-kb", "kb"]
    assert _search(rag, "kb", {"query": "tea"}, ADMIN_KEY).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"query": "tea", "k": 0}, "k"),
    ({"query": "tea", "mode": "semantic"}, "mode"),
    ({"query": ""}, "query"),
    ({"query": "tea", "top": 3}, "top"),
])
def test_a_bad_search_body_is_a_400_naming_the_field(rag: Live, body: dict[str, object], field: str) -> None:
    answer = _search(rag, "kb", body)
    assert answer.status_code == 400
    assert field in json.dumps(answer.json()["error"])


def test_the_cli_searches_through_the_server_without_opening_a_stack(
    rag: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_stack(*args: object, **kwargs: object) -> object:
        raise AssertionError("the CLI opened a stack of its own")

    monkeypatch.setattr(aiestack.build, "build_stack", no_stack)
    result = CliRunner().invoke(build_app(), ["search", "green tea temperature", "-c", "kb", "-k", "2",
                                              "--server", rag.url, "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert hits[0]["source"] == "docs/tea.md" and len(hits) == 2
    table = CliRunner().invoke(build_app(), ["search", "purr", "-c", "kb", "--server", rag.url])
    assert table.exit_code == 0 and "docs/cats.md" in table.stdout and rag.url in table.stdout
    missing = CliRunner().invoke(build_app(), ["search", "tea", "-c", "acme-kb", "--server", rag.url])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, AiestackError) and "does not exist for this key" in str(missing.exception)


def test_a_server_found_unasked_is_used_only_when_it_reads_this_configurations_store(
    rag: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIESTACK_URL", raising=False)
    monkeypatch.delenv("AIESTACK_API_KEY", raising=False)
    monkeypatch.setattr(remote_module, "DEFAULT_URL", rag.url)
    same = find_server(settings(tmp_path), None, local=False)
    assert same is not None and same.url == rag.url
    assert find_server(settings(tmp_path / "elsewhere"), None, local=False) is None  # another deployment
    assert find_server(settings(tmp_path), None, local=True) is None  # --local


def test_an_asked_for_server_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    from aiestack.testing.net import free_port

    with pytest.raises(AiestackError) as info:
        find_server(settings(tmp_path), f"http://127.0.0.1:{free_port()}", local=False)
    assert "did not answer" in str(info.value) and "--local" in (info.value.hint or "")
