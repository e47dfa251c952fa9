"""``[agents.NAME]`` in aiestack.toml: agents a deployment offers by name (CLI, HTTP, ``agent:NAME``).

```toml
[agents.helper]
model = "gpt-4o-mini"             # a configured model or route (default: default_model)
instructions = "Answer briefly."
tools = ["search", "calculator"]  # built-ins: calculator, fetch_url, python, search
collection = "docs"               # what the search tool searches (required with "search")
approval = ["python"]             # tools whose calls wait for a person's approval
max_steps = 8
max_tokens = 20000
budget_usd = 0.05
timeout_s = 60
planning = true                   # the patterns, each optional (see aiestack.agents.pattern_specs)
[agents.helper.memory]
max_context_tokens = 6000
[agents.helper.mcp.files]         # MCP servers' tools (see aiestack.agents.mcp_agents)
command = ["files-mcp", "--root", "/srv/docs"]
tools = ["read_file"]
```

:func:`agent_specs` validates every table when the stack is built (a :class:`ConfigError` names
the key, e.g. ``agents.helper.tools``); :func:`open_agent` builds the :class:`Agent` for a stack,
connecting its MCP servers on first use (:func:`make_agent`, sync, builds one without MCP servers).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from aiestack.agents.loop import Agent
from aiestack.agents.pattern_specs import PatternSpecs, build_patterns
from aiestack.agents.tools import AgentTool
from aiestack.errors import ConfigError
from aiestack.settings import config_error
from aiestack.types import Params

if TYPE_CHECKING:
    from aiestack.build import Stack

#: The tools an ``[agents.NAME]`` table may name.
BUILTIN_TOOLS = ("calculator", "fetch_url", "python", "search")


class AgentSpec(PatternSpecs):
    """One ``[agents.NAME]`` table (with the optional pattern tables of :class:`PatternSpecs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    instructions: str = ""
    tools: tuple[str, ...] = ()
    collection: str | None = None
    approval: tuple[str, ...] = ()
    max_steps: int = Field(default=10, ge=1)
    max_tokens: int | None = Field(default=None, gt=0)
    budget_usd: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    protocol: Literal["auto", "native", "text"] = "auto"
    #: ``[agents.NAME.mcp.SERVER]`` tables, checked by :func:`aiestack.agents.mcp_agents.mcp_servers`.
    mcp: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: tuple[str, ...]) -> tuple[str, ...]:
        for name in tools:
            if name not in BUILTIN_TOOLS:
                raise ValueError(f"unknown tool {name!r}; use the built-ins {', '.join(BUILTIN_TOOLS)}")
        if len(set(tools)) != len(tools):
            raise ValueError("a tool is named twice")
        return tools


def agent_specs(tables: Mapping[str, Any], *, known_models: frozenset[str] | None = None) -> dict[str, AgentSpec]:
    """Every ``[agents.NAME]`` table validated; a :class:`ConfigError` names the first bad key."""
    specs: dict[str, AgentSpec] = {}
    for name, table in tables.items():
        prefix = f"agents.{name}"
        if not isinstance(table, Mapping):
            raise ConfigError(prefix, "is not a table", f"write [agents.{name}] with model, instructions and tools")
        try:
            spec = AgentSpec(**table)
        except ValidationError as exc:
            raise config_error(exc, AgentSpec, source="aiestack.toml", prefix=prefix) from None
        if "search" in spec.tools and not spec.collection:
            raise ConfigError(f"{prefix}.collection", "the search tool needs a collection", f"set {prefix}.collection")
        extra = [t for t in spec.approval if t not in spec.tools]
        if extra:
            raise ConfigError(
                f"{prefix}.approval", f"{', '.join(extra)} is not one of the agent's tools",
                f"name tools from {prefix}.tools ({', '.join(spec.tools) or 'none'})",
            )  # fmt: skip
        named = [("model", spec.model)] if spec.model is not None else []
        for key, model in [*named, *spec.models()]:  # the agent's, and the patterns' own models
            if known_models is not None and model not in known_models:
                raise ConfigError(
                    f"{prefix}.{key}", f"{model!r} is not a configured model or route",
                    f"use one of {', '.join(sorted(known_models))}",
                )  # fmt: skip
        if spec.mcp:
            from aiestack.agents.mcp_agents import mcp_servers

            mcp_servers(prefix, spec.mcp, other_tools=spec.tools)
        specs[name] = spec
    return specs


def make_agent(stack: Stack, name: str) -> Agent:
    """The agent ``[agents.NAME]`` describes, on ``stack``; ``KeyError`` naming the agents there are.

    An agent with MCP servers needs :func:`open_agent` (connecting is async)."""
    return agent_from_spec(stack, name, _spec(stack, name))


async def open_agent(stack: Stack, name: str) -> Agent:
    """The agent ``[agents.NAME]`` describes, on ``stack``, with its MCP servers' tools: connected on
    the agent's first run and kept by the stack (closed by ``stack.aclose()``); ``KeyError`` naming
    the agents there are, :class:`~aiestack.agents.mcp_agents.McpUnavailable` for a server that
    cannot be reached."""
    return await open_agent_from_spec(stack, name, _spec(stack, name))


async def open_agent_from_spec(
    stack: Stack, name: str, spec: AgentSpec, *, model: str | None = None, params: Params | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Agent:
    """:func:`agent_from_spec` with the spec's MCP servers connected (through the stack's pool)."""
    if not spec.mcp:
        return agent_from_spec(stack, name, spec, model=model, params=params, metadata=metadata)
    from aiestack.agents.mcp_agents import McpPool, mcp_servers

    if stack.mcp is None:
        stack.mcp = McpPool()
    servers = mcp_servers(f"agents.{name}", spec.mcp, other_tools=spec.tools)
    tools = await stack.mcp.tools(name, servers)
    return agent_from_spec(stack, name, spec, model=model, params=params, metadata=metadata, mcp_tools=tools)


def _spec(stack: Stack, name: str) -> AgentSpec:
    specs: Mapping[str, AgentSpec] = stack.agent_specs
    spec = specs.get(name)
    if spec is None:
        known = ", ".join(sorted(specs)) or "none: add an [agents.NAME] table to aiestack.toml"
        raise KeyError(f"no agent {name!r} (agents: {known})")
    return spec


def agent_from_spec(
    stack: Stack, name: str, spec: AgentSpec, *, model: str | None = None, params: Params | None = None,
    metadata: Mapping[str, str] | None = None, mcp_tools: Sequence[AgentTool] | None = None,
) -> Agent:
    """The agent ``spec`` describes, on ``stack`` (``model``/``params``/``metadata``: an eval system's overrides;
    ``mcp_tools``: its MCP servers' tools, which :func:`open_agent` connects)."""
    if spec.mcp and mcp_tools is None:
        raise ConfigError(
            f"agents.{name}.mcp", "this agent's MCP servers are connected asynchronously",
            "build it with `await aiestack.agents.config.open_agent(stack, name)`",
        )  # fmt: skip
    tools: list[AgentTool] = [_builtin(stack, spec, tool) for tool in spec.tools]
    tools += mcp_tools or ()
    planning, reflection, memory, long_term = build_patterns(spec, stack.resources)
    return Agent(
        model=model or spec.model or stack.settings.default_model,
        params=params,
        metadata=metadata,
        stack=stack,
        tools=tools,
        instructions=spec.instructions,
        name=name,
        max_steps=spec.max_steps,
        max_tokens=spec.max_tokens,
        budget_usd=spec.budget_usd,
        timeout_s=spec.timeout_s,
        protocol=spec.protocol,
        planning=planning,
        reflection=reflection,
        memory=memory,
        long_term_memory=long_term,
    )


def _builtin(stack: Stack, spec: AgentSpec, name: str) -> AgentTool:
    from aiestack.agents import builtins

    made: Any
    if name == "calculator":
        made = copy.copy(builtins.calculator)  # the module's tool is shared: never change it in place
    elif name == "fetch_url":
        made = builtins.fetch_url_tool()
    elif name == "python":
        made = builtins.python_tool()
    else:
        from aiestack.agents.search import search_tool

        assert spec.collection is not None
        made = search_tool(stack.resources, spec.collection)
    made.approval = name in spec.approval
    tool: AgentTool = made
    return tool
