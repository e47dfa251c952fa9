"""Agents: tools from typed functions, and the agent loop that calls them through the stack's pipeline."""

from typing import TYPE_CHECKING, Any

from aiestack.agents.builtins import calculator, fetch_url_tool, python_tool
from aiestack.agents.events import (
    AgentEvent,
    AnswerDelta,
    ApprovalDecided,
    ApprovalRequested,
    FinalAnswer,
    MemoryRecalled,
    ModelCall,
    ModelDelta,
    PlanMade,
    Reflected,
    RunResult,
    RunStarted,
    RunStopped,
    StopReason,
    StreamEvent,
    Summarised,
    ToolCalled,
    ToolResult,
    event_from_dict,
    event_to_dict,
)
from aiestack.agents.longterm import LongTermMemory
from aiestack.agents.loop import Agent, AgentBackend
from aiestack.agents.mcp import McpServer, McpServerGone, McpTool, mcp_tools
from aiestack.agents.memory import ShortTermMemory
from aiestack.agents.planning import Planning
from aiestack.agents.reflection import Reflection
from aiestack.agents.tools import (
    AgentTool,
    FunctionTool,
    ToolContext,
    ToolOutcome,
    Toolset,
    ToolThreads,
    tool,
)
from aiestack.stores.runs import RunRecord, RunStore

if TYPE_CHECKING:
    from aiestack.agents.search import search_tool


def __getattr__(name: str) -> Any:
    if name == "search_tool":  # pulls in the retrieval wing: only when asked for
        from aiestack.agents.search import search_tool

        return search_tool
    raise AttributeError(f"module 'aiestack.agents' has no attribute {name!r}")


__all__ = [
    "Agent",
    "AgentBackend",
    "AgentEvent",
    "AgentTool",
    "AnswerDelta",
    "ApprovalDecided",
    "ApprovalRequested",
    "FinalAnswer",
    "FunctionTool",
    "LongTermMemory",
    "McpServer",
    "McpServerGone",
    "McpTool",
    "MemoryRecalled",
    "ModelCall",
    "ModelDelta",
    "PlanMade",
    "Planning",
    "Reflected",
    "Reflection",
    "RunRecord",
    "RunResult",
    "RunStarted",
    "RunStopped",
    "RunStore",
    "ShortTermMemory",
    "StopReason",
    "StreamEvent",
    "Summarised",
    "ToolCalled",
    "ToolContext",
    "ToolOutcome",
    "ToolResult",
    "ToolThreads",
    "Toolset",
    "calculator",
    "event_from_dict",
    "event_to_dict",
    "fetch_url_tool",
    "mcp_tools",
    "python_tool",
    "search_tool",
    "tool",
]
