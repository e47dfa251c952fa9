"""Suite systems that are agents: the runner runs the agent on each example and scores the run.

A system with ``agent:`` names an ``[agents.NAME]`` table of aiestack.toml, or holds such a table
itself (inline, validated when the suite loads, errors naming ``systems.N.agent.KEY``). The
suite's ``prompt`` renders each example into the task; the system's ``model`` (when set) and
``params`` override the agent's. Every model call of every run — the loop's steps and the
patterns' calls — bypasses the gateway's caches (``cache = "off"`` on each request) unless the
suite sets ``gateway_cache: true``, and none is answered from the eval's own call cache: an agent
run is measured afresh each time. With a run store, each run is stored like any agent run
(``aiestack agent show RUN_ID``), and the result links to it (``details.agent.run_id``).

A run is always scored, also when it stopped without an answer (``max_steps``, ``loop``, a model
error): that is the agent failing the task. Its final answer is the output the text metrics see;
``task_success``, ``agent_steps``, ``tool_call_accuracy``, ``tool_selection``,
``invalid_tool_calls`` and ``tool_calls`` read the run itself
(:func:`aiestack.evals.agent_scores.score_run`), and ``cost`` and ``latency`` are the run's total
cost and wall time.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiestack.cache.stage import REQUEST_FLAG as CACHE_FLAG
from aiestack.errors import ConfigError
from aiestack.types import Completion, Message, Timing, Usage

if TYPE_CHECKING:
    from aiestack.agents.config import AgentSpec
    from aiestack.agents.events import RunResult
    from aiestack.agents.loop import Agent
    from aiestack.build import Stack
    from aiestack.evals.suite import SystemSpec

#: Builds the agent of a suite system, with the request metadata every one of its calls must carry
#: (or an awaitable of it: an agent with MCP servers connects them first).
AgentFactory = Callable[["SystemSpec", Mapping[str, str]], "Agent | Awaitable[Agent]"]
#: Runs an agent on a task (and stores the run): ``RunKeeper.run`` or the agent's own ``run``.
RunAgent = Callable[["Agent", str], Awaitable["RunResult"]]


def check_agent_system(system: SystemSpec, position: int, source: str) -> None:
    """An inline agent table validated, and the keys an agent system cannot take refused."""
    from aiestack.agents.config import AgentSpec
    from aiestack.settings import config_error

    key = f"{source}: systems.{position}"
    for field in ("system_prompt", "prompt_ref"):
        if getattr(system, field) is not None:
            raise ConfigError(
                f"{key}.{field}", "an agent system takes its instructions from the agent",
                "set instructions in the agent's table, or remove it",
            )  # fmt: skip
    if isinstance(system.agent, Mapping):
        from pydantic import ValidationError

        try:
            AgentSpec(**system.agent)
        except ValidationError as exc:
            raise config_error(exc, AgentSpec, source=source, prefix=f"systems.{position}.agent") from None


def inline_spec(system: SystemSpec) -> AgentSpec | None:
    """The agent table a system holds itself (None: it names a configured agent)."""
    from aiestack.agents.config import AgentSpec

    return AgentSpec(**system.agent) if isinstance(system.agent, Mapping) else None


def stack_agents(stack: Stack) -> AgentFactory:
    """The factory ``aiestack eval run`` uses: agents from the stack's ``[agents.NAME]`` tables or inline ones."""
    from aiestack.agents.config import agent_from_spec, agent_specs, open_agent_from_spec

    known = frozenset([*(e.name for e in stack.models), *stack.routes.names])

    def make(system: SystemSpec, metadata: Mapping[str, str]) -> Agent | Awaitable[Agent]:
        spec = inline_spec(system)
        if spec is not None:
            agent_specs({system.name: spec.model_dump(exclude_defaults=True)}, known_models=known)  # the stack's checks
            name = system.name
        else:
            name = str(system.agent)
            spec = stack.agent_specs.get(name)
            if spec is None:
                configured = ", ".join(sorted(stack.agent_specs)) or "none"
                raise ConfigError(
                    f"systems.{system.name}.agent", f"no agent {name!r} in aiestack.toml (agents: {configured})",
                    "add an [agents.NAME] table, or give the system an inline agent table",
                )  # fmt: skip
        if spec.mcp:  # its MCP servers connect first (through the stack's pool, closed with the stack)
            return open_agent_from_spec(stack, name, spec, model=system.model or None, params=system.to_params(), metadata=metadata)
        return agent_from_spec(stack, name, spec, model=system.model or None, params=system.to_params(), metadata=metadata)

    return make


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """An agent system's answer to one example: the run, as a completion the metrics can read."""

    run: RunResult
    completion: Completion
    exchange_id: str | None
    details: Mapping[str, Any]


class AgentSystems:
    """The agents of a suite's agent systems, built once per system, and their runs."""

    def __init__(self, factory: AgentFactory, run_agent: RunAgent | None, suite_name: str, *, gateway_cache: bool) -> None:
        self._factory = factory
        self._run_agent = run_agent
        self._suite = suite_name
        self._gateway_cache = gateway_cache
        self._agents: dict[str, asyncio.Future[Agent]] = {}

    async def agent(self, system: SystemSpec) -> Agent:
        """The system's agent, built once (the examples running at once wait for the one build)."""
        made = self._agents.get(system.name)
        if made is None:
            metadata = {"eval_suite": self._suite, "eval_system": system.name}
            if not self._gateway_cache:
                metadata[CACHE_FLAG] = "off"
            made = self._agents[system.name] = asyncio.ensure_future(_built(self._factory(system, metadata)))
        return await made

    async def answer(self, system: SystemSpec, task: str, semaphore: asyncio.Semaphore) -> AgentAnswer:
        """Run the system's agent on ``task`` (one run per concurrency slot)."""
        agent = await self.agent(system)
        async with semaphore:
            run = await (self._run_agent(agent, task) if self._run_agent is not None else agent.run(task))
        return as_answer(run, agent.model)


async def _built(made: Agent | Awaitable[Agent]) -> Agent:
    return await made if inspect.isawaitable(made) else made


def as_answer(run: RunResult, model: str) -> AgentAnswer:
    """The run as the eval sees it: its answer as a completion carrying the run's tokens, cost and time."""
    stopped = run.stopped
    completion = Completion(
        message=Message("assistant", run.answer or ""),
        model=model,
        provider="agent",
        finish_reason="stop" if run.answer is not None else None,
        usage=Usage(input_tokens=stopped.input_tokens, output_tokens=stopped.output_tokens),
        timing=Timing(total_ms=stopped.duration_ms),
        cost_usd=stopped.cost_usd,
    )
    calls = run.model_calls
    details = {"run_id": run.run_id, "status": run.status, "stop_reason": run.stop_reason, "steps": run.steps}
    if run.detail:
        details["detail"] = run.detail
    return AgentAnswer(run, completion, calls[-1].exchange_id if calls else None, details)
