"""The ``search`` built-in: retrieval over a collection as a tool (RAG as a tool), with citations.

``search_tool(stack.resources, "docs")`` searches the collection with the stack's retriever (BM25,
vector or hybrid, as :class:`~aiestack.context.retrieval.SearchOptions` say) and shows the model
numbered sources. The numbers are the run's (:meth:`~aiestack.agents.tools.ToolContext.cite`): a
chunk found twice keeps its number, so the final answer's ``[n]`` markers name the sources, and the
run's :class:`~aiestack.agents.events.FinalAnswer` carries them as ``citations`` (the gateway's
citation JSON, each marked ``cited`` when the answer refers to it).

The collection must belong to the run's tenant (``Agent.run(tenant=...)``), or the run's tenant
must be the admin tenant, as for a RAG route.
"""

from __future__ import annotations

from aiestack.agents.tools import FunctionTool, ToolContext, ToolOutcome
from aiestack.context.prompt import sources_of
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.resources import Resources

_MAX_SOURCE_CHARS = 1500


def search_tool(
    resources: Resources,
    collection: str,
    *,
    name: str = "search",
    description: str | None = None,
    options: SearchOptions | None = None,
    max_source_chars: int = _MAX_SOURCE_CHARS,
    admin_tenant: str = "admin",
    timeout_s: float = 30.0,
) -> FunctionTool:
    """A tool that searches ``collection`` and returns numbered sources the answer can cite as ``[n]``."""
    opts = options or SearchOptions()
    about = description or (
        f"Search the {collection} collection for passages relevant to a query. Results are numbered "
        "sources [n]; cite the ones you use as [n] in your answer."
    )

    async def search(query: str, context: ToolContext) -> ToolOutcome:
        info = resources.documents.get_collection(resources.documents.resolve(collection))
        if info is None:
            return ToolOutcome(
                f"Error: the collection {collection!r} does not exist", error=f"no collection {collection!r}"
            )
        if info.tenant != context.tenant and context.tenant != admin_tenant:
            msg = f"the collection {collection!r} belongs to another tenant"
            return ToolOutcome(f"Error: {msg}", error=msg)
        embeddings = resources.embeddings if opts.mode != "bm25" or opts.mmr_lambda is not None else None
        retriever = Retriever(resources.documents, embeddings, models=resources.embeddings_for)
        found = await retriever.search(collection, query, opts)
        if not found.hits:
            return ToolOutcome(f"No results for {query!r} in {collection}.")
        numbers = context.cite(found.hits)
        blocks = []
        for n, source in zip(numbers, sources_of(found.hits, max_chars=max_source_chars), strict=True):
            head = f"[{n}] {source.title or source.source}"
            if source.heading:
                head += f" — {source.heading}"
            blocks.append(f"{head}\n{source.text}")
        return ToolOutcome("\n\n".join(blocks))

    search.__doc__ = f"""{about}

    Args:
        query: what to look for, in words
    """
    return FunctionTool(search, name=name, timeout_s=timeout_s)
