"""aiestack: the AI-engineering stack as one Python package and one server.

The public API is what ``__all__`` names (a test pins it); everything else is private and may change.

    from aiestack import open_stack, ChatRequest, Message

    async with open_stack() as stack:
        ex = await stack.chat(ChatRequest(model="", messages=(Message("user", "The capital of France is"),)))
        print(ex.completion.text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiestack.errors import (
    AiestackError,
    AuthError,
    BudgetExceeded,
    ConfigError,
    ContextLengthExceeded,
    GuardrailBlocked,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StoreError,
    StreamBroken,
)

if TYPE_CHECKING:
    from aiestack.agents import (
        Agent,
        McpServer,
        RunRecord,
        RunResult,
        RunStore,
        ToolContext,
        Toolset,
        mcp_tools,
        tool,
    )
    from aiestack.batch import BatchRunner, InProcessRunner, RayRunner, open_runner
    from aiestack.build import Stack, build_stack, open_stack
    from aiestack.context.ingest import IngestOptions, IngestReport, ingest
    from aiestack.context.retrieval import Retriever, SearchOptions
    from aiestack.context.versions import (
        CollectionVersion,
        collection_versions,
        reindex_collection,
        switch_collection,
    )
    from aiestack.datasets import DatasetRow, DatasetStore, DatasetVersion, ExchangeSelection, build_dataset
    from aiestack.models.base import ChatModel, EmbeddingModel, Health
    from aiestack.models.fake import FakeModel, Script
    from aiestack.models.pricing import Price, PriceTable
    from aiestack.models.registry import ModelEntry, ModelRegistry
    from aiestack.pipeline import Next, Pipeline, Stage
    from aiestack.plans import RoutePlans
    from aiestack.prompts.registry import PromptRegistry
    from aiestack.redteam import (
        Attempt,
        FamilyReport,
        Probe,
        RedteamReport,
        Tokens,
        build_probes,
        run_redteam,
    )
    from aiestack.resources import Resources
    from aiestack.sampling.config import SamplingPlan
    from aiestack.settings import Settings, load_settings
    from aiestack.sidecalls import ModelCaller, SideCalls
    from aiestack.stores.documents import CollectionInfo, DocumentStore
    from aiestack.stores.open import open_store
    from aiestack.streams import collect, tap
    from aiestack.types import (
        ChatRequest,
        Chunk,
        Completion,
        Delta,
        Document,
        Exchange,
        Feedback,
        Hit,
        Message,
        Params,
        ResponseFormat,
        RoutePlan,
        Timing,
        TokenLogprob,
        Tool,
        ToolCall,
        Usage,
        Verdict,
    )

__version__ = "0.1.0"

# Everything but the errors is imported when first asked for: `aiestack --help` and a plain
# `import aiestack` stay fast (tests/cli/test_cold_start.py pins what they must not import). The
# composition root pulls in storage and tracing; the wings (retrieval, ingestion, prompts) their engines.
_LAZY = {
    "ChatModel": "aiestack.models.base",
    "EmbeddingModel": "aiestack.models.base",
    "Health": "aiestack.models.base",
    "FakeModel": "aiestack.models.fake",
    "Script": "aiestack.models.fake",
    "Price": "aiestack.models.pricing",
    "PriceTable": "aiestack.models.pricing",
    "ModelEntry": "aiestack.models.registry",
    "ModelRegistry": "aiestack.models.registry",
    "Next": "aiestack.pipeline",
    "Pipeline": "aiestack.pipeline",
    "Stage": "aiestack.pipeline",
    "Settings": "aiestack.settings",
    "load_settings": "aiestack.settings",
    "collect": "aiestack.streams",
    "tap": "aiestack.streams",
    **{
        name: "aiestack.types"
        for name in ["ChatRequest", "Chunk", "Completion", "Delta", "Document", "Exchange", "Feedback", "Hit", "Message", "Params", "ResponseFormat", "RoutePlan", "Timing", "TokenLogprob", "Tool", "ToolCall", "Usage", "Verdict"]
    },
    "Stack": "aiestack.build",
    "build_stack": "aiestack.build",
    "open_stack": "aiestack.build",
    "CollectionInfo": "aiestack.stores.documents",
    "DocumentStore": "aiestack.stores.documents",
    "open_store": "aiestack.stores.open",
    "ingest": "aiestack.context.ingest",
    "CollectionVersion": "aiestack.context.versions",
    "collection_versions": "aiestack.context.versions",
    "reindex_collection": "aiestack.context.versions",
    "switch_collection": "aiestack.context.versions",
    "IngestOptions": "aiestack.context.ingest",
    "IngestReport": "aiestack.context.ingest",
    "Retriever": "aiestack.context.retrieval",
    "SearchOptions": "aiestack.context.retrieval",
    "PromptRegistry": "aiestack.prompts.registry",
    "RoutePlans": "aiestack.plans",
    "Resources": "aiestack.resources",
    "SamplingPlan": "aiestack.sampling.config",
    "ModelCaller": "aiestack.sidecalls",
    "SideCalls": "aiestack.sidecalls",
    "Toolset": "aiestack.agents",
    "McpServer": "aiestack.agents",
    "mcp_tools": "aiestack.agents",
    "DatasetRow": "aiestack.datasets",
    "DatasetStore": "aiestack.datasets",
    "DatasetVersion": "aiestack.datasets",
    "ExchangeSelection": "aiestack.datasets",
    "build_dataset": "aiestack.datasets",
    "tool": "aiestack.agents",
    "Agent": "aiestack.agents",
    "RunResult": "aiestack.agents",
    "RunRecord": "aiestack.agents",
    "RunStore": "aiestack.agents",
    "ToolContext": "aiestack.agents",
    "BatchRunner": "aiestack.batch",
    "InProcessRunner": "aiestack.batch",
    "RayRunner": "aiestack.batch",
    "open_runner": "aiestack.batch",
    "Attempt": "aiestack.redteam",
    "FamilyReport": "aiestack.redteam",
    "Probe": "aiestack.redteam",
    "RedteamReport": "aiestack.redteam",
    "Tokens": "aiestack.redteam",
    "build_probes": "aiestack.redteam",
    "run_redteam": "aiestack.redteam",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiestack' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


__all__ = [
    "Agent",
    "AiestackError",
    "Attempt",
    "AuthError",
    "BatchRunner",
    "BudgetExceeded",
    "ChatModel",
    "ChatRequest",
    "Chunk",
    "CollectionInfo",
    # collection versions: re-indexed with another embedding model, one switch
    "CollectionVersion",
    "Completion",
    "ConfigError",
    "ContextLengthExceeded",
    "DatasetRow",
    "DatasetStore",
    "DatasetVersion",
    "Delta",
    "Document",
    "DocumentStore",
    "EmbeddingModel",
    "Exchange",
    "ExchangeSelection",
    "FakeModel",
    "FamilyReport",
    "Feedback",
    "GuardrailBlocked",
    "Health",
    "Hit",
    "InProcessRunner",
    "IngestOptions",
    "IngestReport",
    "InvalidRequest",
    "McpServer",
    "Message",
    "ModelCaller",
    "ModelEntry",
    "ModelNotFound",
    "ModelRegistry",
    "Next",
    "Params",
    "Pipeline",
    "Price",
    "PriceTable",
    "Probe",
    "PromptRegistry",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RayRunner",
    "RedteamReport",
    "Resources",
    "ResponseFormat",
    "Retriever",
    "RoutePlan",
    "RoutePlans",
    "RunRecord",
    "RunResult",
    "RunStore",
    "SamplingPlan",
    "Script",
    "SearchOptions",
    "Settings",
    "SideCalls",
    "Stack",
    "Stage",
    "StoreError",
    "StreamBroken",
    "Timing",
    "TokenLogprob",
    "Tokens",
    "Tool",
    "ToolCall",
    "ToolContext",
    "Toolset",
    "Usage",
    "Verdict",
    "__version__",
    "build_dataset",
    "build_probes",
    "build_stack",
    "collect",
    "collection_versions",
    "ingest",
    "load_settings",
    "mcp_tools",
    "open_runner",
    "open_stack",
    "open_store",
    "reindex_collection",
    "run_redteam",
    "switch_collection",
    "tap",
    "tool",
]
