"""The patterns' tables in ``[agents.NAME]`` (planning, reflection, memory, long-term memory).

```toml
[agents.helper]
model = "gpt-4o-mini"
planning = true                      # or a table with options:
[agents.helper.reflection]
max_rounds = 2
[agents.helper.memory]
max_context_tokens = 6000
keep_last = 6
[agents.helper.long_term_memory]
collection = "memory"                # each tenant's facts in memory--TENANT
recall_k = 3
```

Each table is optional; ``true`` turns a pattern on with its defaults, ``false`` (or no table) leaves
it off. ``memory`` needs ``max_context_tokens``. :func:`build_patterns` makes the objects
:class:`~aiestack.agents.loop.Agent` takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from aiestack.agents.longterm import LongTermMemory
    from aiestack.agents.memory import ShortTermMemory
    from aiestack.agents.planning import Planning
    from aiestack.agents.reflection import Reflection
    from aiestack.resources import Resources


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanningSpec(_Table):
    """``[agents.NAME.planning]``: plan-then-execute."""

    max_plan_steps: int = Field(default=8, ge=1, le=50)
    max_attempts: int = Field(default=3, ge=1, le=10)
    max_replans: int = Field(default=2, ge=0, le=20)
    model: str | None = None


class ReflectionSpec(_Table):
    """``[agents.NAME.reflection]``: a critique of each candidate answer."""

    max_rounds: int = Field(default=2, ge=1, le=10)
    model: str | None = None


class MemorySpec(_Table):
    """``[agents.NAME.memory]``: short-term memory (window + summary)."""

    max_context_tokens: int = Field(ge=64)
    keep_last: int = Field(default=6, ge=1)
    model: str | None = None


class LongTermMemorySpec(_Table):
    """``[agents.NAME.long_term_memory]``: facts per tenant in a collection."""

    collection: str = Field(default="memory", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,100}$")
    recall_k: int = Field(default=3, ge=1, le=50)
    mode: Literal["bm25", "vector", "hybrid"] = "hybrid"
    min_score: float | None = None
    auto_recall: bool = True
    tools: bool = True


class PatternSpecs(_Table):
    """The four optional pattern tables of an ``[agents.NAME]`` table."""

    planning: PlanningSpec | None = None
    reflection: ReflectionSpec | None = None
    memory: MemorySpec | None = None
    long_term_memory: LongTermMemorySpec | None = None

    @field_validator("planning", "reflection", "long_term_memory", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_needs_a_budget(cls, value: Any) -> Any:
        if value is True:
            raise ValueError("memory needs its token budget: write [agents.NAME.memory] with max_context_tokens = 6000")
        return None if value is False else value

    def models(self) -> list[tuple[str, str]]:
        """``(key, model)`` of every pattern that names its own model (checked against the configured ones)."""
        named = [("planning", self.planning), ("reflection", self.reflection), ("memory", self.memory)]
        return [(f"{key}.model", spec.model) for key, spec in named if spec is not None and spec.model is not None]


def build_patterns(
    specs: PatternSpecs, resources: Resources
) -> tuple[Planning | None, Reflection | None, ShortTermMemory | None, LongTermMemory | None]:
    """The pattern objects the tables describe (None where a pattern is off)."""
    from aiestack.agents.longterm import LongTermMemory
    from aiestack.agents.memory import ShortTermMemory
    from aiestack.agents.planning import Planning
    from aiestack.agents.reflection import Reflection

    planning = reflection = memory = long_term = None
    if specs.planning is not None:
        planning = Planning(**specs.planning.model_dump())
    if specs.reflection is not None:
        reflection = Reflection(**specs.reflection.model_dump())
    if specs.memory is not None:
        memory = ShortTermMemory(**specs.memory.model_dump())
    if specs.long_term_memory is not None:
        lt = specs.long_term_memory
        long_term = LongTermMemory(
            resources, collection=lt.collection, recall_k=lt.recall_k, mode=lt.mode, min_score=lt.min_score,
            auto_recall=lt.auto_recall, tools_enabled=lt.tools,
        )  # fmt: skip
    return planning, reflection, memory, long_term
