"""The public API is exactly what __all__ names; changing it is a deliberate act (update this list)."""

from __future__ import annotations

import pytest

import aiestack

pytestmark = pytest.mark.unit

EXPECTED = {
    "AiestackError", "AuthError", "BudgetExceeded", "ChatModel", "ChatRequest", "Completion", "ConfigError",
    "ContextLengthExceeded", "Delta", "EmbeddingModel", "Exchange", "FakeModel", "GuardrailBlocked", "Health",
    "InvalidRequest", "Message", "ModelEntry", "ModelNotFound", "ModelRegistry", "Next", "Params", "Pipeline",
    "Price", "PriceTable", "ProviderError", "ProviderRateLimited", "ProviderTimeout", "ProviderUnavailable",
    "RateLimited", "ResponseFormat", "Script", "Settings", "Stack", "Stage", "StoreError", "StreamBroken",
    "Timing", "TokenLogprob", "Tool", "ToolCall", "Usage", "Verdict", "__version__", "build_stack", "collect",
    "load_settings", "open_stack", "tap",
    # the context, feedback and prompts wings
    "Chunk", "CollectionInfo", "Document", "DocumentStore", "Feedback", "Hit", "IngestOptions", "IngestReport",
    "PromptRegistry", "Retriever", "SearchOptions", "ingest", "open_store",
    # the seams between the pipeline and the wings: route plans, shared resources, side-calls
    "ModelCaller", "Resources", "RoutePlan", "RoutePlans", "SideCalls",
    # the agents wing (tools from typed functions, the agent loop, MCP servers' tools, stored runs)
    "Agent", "McpServer", "RunRecord", "RunResult", "RunStore", "ToolContext", "Toolset", "mcp_tools", "tool",
    # test-time compute on routes (a route plan's sampling part)
    "SamplingPlan",
    # the data flywheel: versioned datasets
    "DatasetRow", "DatasetStore", "DatasetVersion", "ExchangeSelection", "build_dataset",
    # collection versions (re-indexed with another embedding model) and the switch between them
    "CollectionVersion", "collection_versions", "reindex_collection", "switch_collection",
    # batch work in-process or on Ray (ingest embedding, eval scoring)
    "BatchRunner", "InProcessRunner", "RayRunner", "open_runner",
    # the red-team runner (aiestack redteam ROUTE)
    "Attempt", "FamilyReport", "Probe", "RedteamReport", "Tokens", "build_probes", "run_redteam",
}


def test_all_is_pinned() -> None:
    assert set(aiestack.__all__) == EXPECTED
    assert len(aiestack.__all__) == len(set(aiestack.__all__))


def test_every_public_name_resolves() -> None:
    for name in aiestack.__all__:
        assert getattr(aiestack, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        aiestack.no_such_thing  # noqa: B018
