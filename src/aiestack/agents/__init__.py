"""Agents: tools from typed functions, and the agent loop that calls them through the stack's pipeline."""

from aiestack.agents.builtins import calculator
from aiestack.agents.events import (
    AgentEvent,
    FinalAnswer,
    ModelCall,
    RunResult,
    RunStarted,
    RunStopped,
    StopReason,
    ToolCalled,
    ToolResult,
    event_from_dict,
    event_to_dict,
)
from aiestack.agents.loop import Agent, AgentBackend
from aiestack.agents.tools import FunctionTool, ToolContext, ToolOutcome, Toolset, ToolThreads, tool

__all__ = [
    "Agent",
    "AgentBackend",
    "AgentEvent",
    "FinalAnswer",
    "FunctionTool",
    "ModelCall",
    "RunResult",
    "RunStarted",
    "RunStopped",
    "StopReason",
    "ToolCalled",
    "ToolContext",
    "ToolOutcome",
    "ToolResult",
    "ToolThreads",
    "Toolset",
    "calculator",
    "event_from_dict",
    "event_to_dict",
    "tool",
]
