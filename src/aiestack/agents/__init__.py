"""Agents: tools from typed functions (the agent loop builds on these)."""

from aiestack.agents.builtins import calculator
from aiestack.agents.tools import FunctionTool, ToolOutcome, Toolset, tool

__all__ = ["FunctionTool", "ToolOutcome", "Toolset", "calculator", "tool"]
