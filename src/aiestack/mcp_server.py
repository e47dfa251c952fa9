"""aiestack as an MCP server (``aiestack mcp``; the official ``mcp`` SDK, ``pip install aiestack[agents]``).

MCP clients (IDEs, desktop assistants, other agents) get the deployment's collections, cited RAG
answers and eval runs as tools:

- ``collections`` — the collections, with their tenant and document and chunk counts;
- ``search`` — ranked hits of a collection (BM25, vector or hybrid) with scores and sources;
- ``ask`` — an answer from a collection through the stack's pipeline (the RAG stage, guards,
  caches, tracing, as ``aiestack ask``), with its numbered citations, each marked ``cited``;
- ``eval_run`` — runs an eval suite file (as ``aiestack eval run``) and returns its summary.

The server acts as the operator, as the CLI does: it reads every collection and asks as the tenant
that owns it. Over stdio it is a child process of the client; over streamable HTTP it listens on
127.0.0.1 only, since it checks no key. Give it to people you would give the CLI to.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiestack.errors import AiestackError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from aiestack.build import Stack
    from aiestack.settings import Settings

LOOPBACK = "127.0.0.1"
_MAX_SNIPPET = 2000


def build_mcp_server(stack: Stack, settings: Settings) -> MCPServer:
    """The MCP server whose tools run on ``stack`` (open for as long as the server runs)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer(
        "aiestack",
        instructions=(
            "Search aiestack collections, answer questions from them with numbered citations, "
            "and run eval suites. Call `collections` first to learn the collection names."
        ),
        log_level="WARNING",
    )

    def collection_or_error(name: str) -> Any:
        info = stack.documents.get_collection(stack.documents.resolve(name))
        if info is None:
            known = ", ".join(c.name for c in stack.documents.list_collections()) or "none yet"
            raise ToolError(f"the collection {name!r} does not exist (collections: {known})")
        return info

    @server.tool()
    def collections() -> list[dict[str, Any]]:
        """The collections of this aiestack deployment: name, tenant, documents and chunks."""
        return [
            {"name": c.name, "tenant": c.tenant, "documents": c.documents, "chunks": c.chunks}
            for c in stack.documents.list_collections()
        ]

    @server.tool()
    async def search(
        collection: str, query: str, k: int = 5, mode: Literal["bm25", "vector", "hybrid"] = "hybrid"
    ) -> list[dict[str, Any]]:
        """Search a collection: ranked passages with their scores and sources.

        Args:
            collection: the collection's name (see the collections tool)
            query: what to look for, in words
            k: how many hits (1 to 50)
            mode: bm25 (words), vector (meaning) or hybrid (both)
        """
        from aiestack.context.retrieval import Retriever, SearchOptions

        if not 1 <= k <= 50:
            raise ToolError(f"k must be between 1 and 50 (got {k})")
        collection_or_error(collection)
        retriever = Retriever(
            stack.documents, stack.embeddings if mode != "bm25" else None, models=stack.resources.embeddings_for
        )
        try:
            found = await retriever.search(collection, query, SearchOptions(mode=mode, k=k))
        except AiestackError as exc:
            raise ToolError(_message(exc)) from None
        return [
            {
                "rank": rank,
                "score": hit.score,
                "source": hit.chunk.metadata.get("source") or hit.chunk.document_id,
                "title": hit.chunk.metadata.get("title"),
                "chunk_id": hit.chunk.id,
                "text": hit.chunk.text[:_MAX_SNIPPET],
            }
            for rank, hit in enumerate(found.hits, start=1)
        ]

    @server.tool()
    async def ask(question: str, collection: str, model: str = "", max_tokens: int = 512) -> dict[str, Any]:
        """Answer a question from a collection, citing its sources as [n].

        Args:
            question: the question
            collection: the collection to answer from (see the collections tool)
            model: a model or route of this deployment (default: its default model)
            max_tokens: most tokens of the answer (1 to 8192)
        """
        from aiestack.context.citations import citations_json
        from aiestack.context.stage import COLLECTION_METADATA
        from aiestack.types import ChatRequest, Message, Params

        if not 1 <= max_tokens <= 8192:
            raise ToolError(f"max_tokens must be between 1 and 8192 (got {max_tokens})")
        info = collection_or_error(collection)
        request = ChatRequest(
            model=model or settings.default_model,
            messages=(Message("user", question),),
            params=Params(temperature=0.0, max_tokens=max_tokens),
            metadata={COLLECTION_METADATA: collection},
        )
        try:
            ex = await stack.chat(request, tenant=info.tenant)  # the operator asks as the collection's tenant
        except AiestackError as exc:
            raise ToolError(_message(exc)) from None
        answer = ex.completion.text if ex.completion is not None else ""
        return {"answer": answer, "citations": citations_json(ex.hits, answer), "exchange_id": ex.id}

    @server.tool()
    async def eval_run(
        suite_file: str, limit: int | None = None, systems: list[str] | None = None
    ) -> dict[str, Any]:
        """Run an eval suite (a YAML file on the server) and return each system's metrics.

        Args:
            suite_file: path of the suite YAML file, on the machine running aiestack
            limit: only the first N examples
            systems: only these systems of the suite
        """
        from aiestack.cli.evals import run_suite
        from aiestack.evals.datasets import load_examples
        from aiestack.evals.suite import load_suite
        from aiestack.evals.summary import summaries_from_run

        path = Path(suite_file).expanduser()
        if not path.is_file():
            raise ToolError(
                f"no suite file at {str(path)!r} (give the path of a suite YAML file on the server)"
            )
        try:
            suite = await asyncio.to_thread(lambda: load_suite(path).select(systems or []))
            if limit is not None:
                suite = suite.model_copy(
                    update={"dataset": suite.dataset.model_copy(update={"limit": limit})}
                )
            examples = await asyncio.to_thread(load_examples, suite.dataset, suite.dataset_path)
            result = await run_suite(stack, settings, suite, examples, str(path.resolve()))
        except AiestackError as exc:
            raise ToolError(_message(exc)) from None
        return {
            "run_id": result.run.id,
            "calls": result.calls,
            "eval_cache_hits": result.cache_hits,
            "systems": {name: s.as_dict() for name, s in summaries_from_run(result.run.summary).items()},
        }

    return server


def _message(exc: AiestackError) -> str:
    return f"{exc.message} {exc.hint}" if exc.hint else exc.message


async def serve(settings: Settings, *, http: bool = False, port: int = 8765) -> None:
    """Open the stack and serve MCP over stdio, or over streamable HTTP on 127.0.0.1:``port``/mcp."""
    from aiestack.build import open_stack

    async with open_stack(settings) as stack:
        server = build_mcp_server(stack, settings)
        if not http:
            await server.run_stdio_async()
            return
        import uvicorn

        app = server.streamable_http_app(host=LOOPBACK)
        config = uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", lifespan="on")
        with contextlib.suppress(asyncio.CancelledError):
            await uvicorn.Server(config).serve()
