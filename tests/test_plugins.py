"""The plugin API is pinned, and each hook's registrations are used by the stack built with the plugin."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from aiestack import hookspecs
from aiestack.build import open_stack
from aiestack.cache.stage import CacheStage
from aiestack.errors import GuardrailBlocked
from aiestack.evals.base import Sample, Score
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner
from aiestack.evals.suite import parse_suite
from aiestack.hookspecs import (
    CommandSpec,
    GuardrailSpec,
    MetricSpec,
    RetrieverSpec,
    StoreSpec,
    ToolSpec,
    hookimpl,
)
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry
from aiestack.pipeline import Next
from aiestack.plugins import collect_plugins, plugin_manager
from aiestack.settings import Settings
from aiestack.stores.base import EvalStore
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.stores.documents import Filter
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.queries import ScanQueries
from aiestack.types import ChatRequest, Chunk, Exchange, Hit, Message, Tool

from .context._rag_kit import memory_store

pytestmark = pytest.mark.unit

#: The plugin API: what a plugin imports. Changing it breaks plugins; change this pin on purpose.
PLUGIN_API = {
    "CommandSpec", "GuardrailSpec", "Hookspecs", "MetricSpec", "PluginRetriever", "ProviderFactory", "ProviderSpec",
    "RetrieverSpec", "StoreFactory", "StoreSpec", "ToolSpec", "hookimpl", "hookspec",
}
HOOKS = {
    "register_models", "register_guardrails", "register_retrievers", "register_stores", "register_tools",
    "register_metrics", "register_commands",
}


def test_the_plugin_api_is_pinned() -> None:
    assert set(hookspecs.__all__) == PLUGIN_API
    assert all(hasattr(hookspecs, name) for name in hookspecs.__all__)
    assert {name for name in vars(hookspecs.Hookspecs) if name.startswith("register_")} == HOOKS


def test_the_builtin_providers_come_through_the_same_hook() -> None:
    found = collect_plugins(plugin_manager(entry_points=False))
    assert {"openai", "anthropic", "llama_cpp", "fake"} <= set(found.providers)
    assert not found.guardrails and not found.retrievers and not found.tools and not found.metrics


def test_a_name_registered_twice_is_an_error() -> None:
    class One:
        @hookimpl
        def register_tools(self, register: Callable[[ToolSpec], None]) -> None:
            register(ToolSpec(Tool("clock"), _now))

    with pytest.raises(ValueError, match="two plugins register the tool 'clock'"):
        collect_plugins(plugin_manager([One(), One()], entry_points=False))


async def _now() -> str:
    return "12:00"


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "embedded_model": False,
        "default_model": "fake",
        "models": {"fake": {"provider": "fake"}},
        "store": {"url": "memory://"},
        "guards": {"enabled": False},
        "cache": {"enabled": False},
    }
    return Settings(**{**base, **changes})


class NoPirates:
    """A guard stage: blocks any request that mentions pirates."""

    name = "no_pirates"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        if any("pirate" in m.text.lower() for m in ex.request.messages):
            raise GuardrailBlocked("no_pirates", "pirates are not allowed here")
        return await call_next(ex)


class GuardPlugin:
    @hookimpl
    def register_guardrails(self, register: Callable[[GuardrailSpec], None]) -> None:
        register(GuardrailSpec("no_pirates", NoPirates))


async def test_a_registered_guardrail_runs_on_every_request(tmp_path: Path) -> None:
    async with open_stack(_settings(tmp_path), plugins=[GuardPlugin()]) as stack:
        ok = await stack.chat(ChatRequest(model="", messages=(Message("user", "hello"),)))
        assert ok.completion is not None and ok.completion.text == "hello"
        with pytest.raises(GuardrailBlocked, match="no_pirates"):
            await stack.chat(ChatRequest(model="", messages=(Message("user", "a pirate ship"),)))
    async with open_stack(_settings(tmp_path)) as plain:  # without the plugin: no such guard
        out = await plain.chat(ChatRequest(model="", messages=(Message("user", "a pirate ship"),)))
        assert out.completion is not None


PIRATE = Chunk(id="plugin:1", document_id="plugin-doc", text="Cats purr at pirates, a plugin says.", metadata={"source": "plugin"})


class PluginList:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int]] = []

    async def search(self, collection: str, query: str, *, k: int, filter: Filter | None) -> list[Hit]:
        self.asked.append((collection, query, k))
        return [Hit(PIRATE, 1.0, "plugin")]


async def test_a_registered_retriever_adds_its_list_to_every_rag_search(tmp_path: Path) -> None:
    retriever = PluginList()

    class RetrieverPlugin:
        @hookimpl
        def register_retrievers(self, register: Callable[[RetrieverSpec], None]) -> None:
            register(RetrieverSpec("pirate_list", lambda: retriever))

    settings = _settings(
        tmp_path,
        routes={"docs": {"deployments": ["fake"], "collection": "kb", "rag": {"mode": "bm25", "k": 3}}},
    )
    async with open_stack(settings, plugins=[RetrieverPlugin()]) as stack:
        stack.resources.use(documents=memory_store("kb"))
        ex = await stack.chat(ChatRequest(model="docs", messages=(Message("user", "why do cats purr"),)))
    assert retriever.asked == [("kb", "why do cats purr", 50)]
    assert PIRATE.id in [h.chunk.id for h in ex.hits]
    assert any(h.retriever != "plugin" for h in ex.hits)  # fused with the built-in term search
    assert ex.completion is not None and PIRATE.text in ex.completion.text  # the fake echoes its prompt


async def test_a_registered_store_is_opened_for_its_url(tmp_path: Path) -> None:
    opened: list[str] = []

    class MyDb(MemoryExchangeStore):
        url = "mydb://somewhere"

    def open_mydb(url: str) -> MemoryExchangeStore:
        opened.append(url)
        return MyDb()

    class StorePlugin:
        @hookimpl
        def register_stores(self, register: Callable[[StoreSpec], None]) -> None:
            register(StoreSpec("mydb", "exchanges", open_mydb))

    settings = _settings(tmp_path, store={"url": "mydb://somewhere"}, cache={"enabled": True})
    async with open_stack(settings, plugins=[StorePlugin()]) as stack:
        await stack.chat(ChatRequest(model="", messages=(Message("user", "hello"),)))
        assert opened == ["mydb://somewhere"]
        assert isinstance(stack.store, MyDb)
        # It registers no other capability: the console scans it, the cache is in memory.
        assert isinstance(stack.queries, ScanQueries)
        cache = next(s for s in stack.pipeline.stages if isinstance(s, CacheStage))
        assert cache.exact is not None and isinstance(cache.exact.backend, MemoryCacheBackend)


async def test_a_registered_tool_is_listed_by_the_stack(tmp_path: Path) -> None:
    weather = Tool("weather", "The weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})

    async def run(city: str) -> str:
        return f"sunny in {city}"

    class ToolPlugin:
        @hookimpl
        def register_tools(self, register: Callable[[ToolSpec], None]) -> None:
            register(ToolSpec(weather, run))

    async with open_stack(_settings(tmp_path), plugins=[ToolPlugin()]) as stack:
        assert list(stack.tools) == ["weather"]
        assert stack.tools["weather"].tool == weather
        assert await stack.tools["weather"].run(city="Oslo") == "sunny in Oslo"
    async with open_stack(_settings(tmp_path)) as plain:
        assert dict(plain.tools) == {}


class Shouty:
    higher_is_better = True

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.mark = str(options.get("mark", "!"))

    async def score(self, sample: Sample) -> Score:
        return Score(1.0 if sample.output.endswith(self.mark) else 0.0)


async def test_a_registered_metric_can_be_named_by_a_suite(tmp_path: Path) -> None:
    class MetricPlugin:
        @hookimpl
        def register_metrics(self, register: Callable[[MetricSpec], None]) -> None:
            register(MetricSpec("shouty", Shouty))

    rows = [{"id": "a", "q": "hi!"}, {"id": "b", "q": "hi"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    suite = parse_suite(
        {
            "name": "t",
            "dataset": {"path": "d.jsonl", "id": "id", "input": "q"},
            "prompt": "{{ input }}",
            "systems": [{"name": "s", "model": "echo"}],
            "metrics": [{"name": "shouty", "mark": "!"}],
        },
        base_dir=tmp_path,
    )
    echo = ModelEntry(name="echo", provider=FakeModel(), upstream="echo")
    async with open_stack(_settings(tmp_path), plugins=[MetricPlugin()], models=[echo]) as stack:
        assert isinstance(stack.store, EvalStore)
        runner = EvalRunner(stack.chat, stack.store, metrics=stack.eval_metrics, judge=stack.side_calls.caller("eval.judge"))
        result = await runner.run(suite, load_examples(suite.dataset, suite.dataset_path))
    scores = {r.example_id: r.scores["shouty"] for r in result.results}
    assert scores == {"a": 1.0, "b": 0.0}


def test_a_registered_command_runs_from_the_cli() -> None:
    import typer
    from typer.testing import CliRunner

    from aiestack.cli import build_app

    def hello(name: str = typer.Argument(..., help="Who to greet.")) -> None:
        """Greet someone."""
        typer.echo(f"hello {name}")

    group = typer.Typer()

    @group.command()
    def count(n: int) -> None:
        typer.echo(" ".join(str(i) for i in range(1, n + 1)))

    class CommandPlugin:
        @hookimpl
        def register_commands(self, register: Callable[[CommandSpec], None]) -> None:
            register(CommandSpec("hello", hello))
            register(CommandSpec("numbers", group, help="Numbers."))

    app = build_app([CommandPlugin()], entry_points=False)
    runner = CliRunner()
    said = runner.invoke(app, ["hello", "world"])
    assert said.exit_code == 0 and said.output == "hello world\n"
    counted = runner.invoke(app, ["numbers", "count", "3"])
    assert counted.exit_code == 0 and counted.output == "1 2 3\n"
    listed = runner.invoke(app, ["--help"])
    assert "hello" in listed.output and "Greet someone." in listed.output and "numbers" in listed.output


def test_a_plugin_command_cannot_take_a_builtin_name() -> None:
    from aiestack.cli import build_app
    from aiestack.errors import ConfigError

    class Shadowing:
        @hookimpl
        def register_commands(self, register: Callable[[CommandSpec], None]) -> None:
            register(CommandSpec("chat", lambda: None))

    with pytest.raises(ConfigError, match="'chat', which is a built-in aiestack command"):
        build_app([Shadowing()], entry_points=False)
