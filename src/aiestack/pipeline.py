"""The request path: an ordered list of stages, each a middleware around the next (the onion).

A stage sees the exchange on the way in and the result on the way out. It may end the request
early by returning without calling ``call_next``; the outer stages still see what it returned.
The last stage is the terminal one (it calls the model); calling ``call_next`` from it is a bug.

When the pipeline is given the route plans (:class:`~aiestack.plans.RoutePlans`), an exchange that
enters without a plan gets the plan of the name its request's ``model`` gives, once, before the
first stage; the stages read ``ex.plan`` and never look a route up themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from aiestack.errors import AiestackError
from aiestack.plans import RoutePlans
from aiestack.types import Exchange

Next = Callable[[Exchange], Awaitable[Exchange]]


@runtime_checkable
class Stage(Protocol):
    """A stage may also define ``passes(ex) -> bool``: True when it would hand ``ex`` inward untouched
    and leave the result alone (its wing is off for this exchange). The pipeline then goes straight to
    the next stage, without the stage's call or its span (see :meth:`Pipeline._chain`)."""

    name: str

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange: ...


class StageObserver(Protocol):
    """Wraps each stage call, e.g. in a tracing span. Must not swallow exceptions."""

    def stage(self, name: str, ex: Exchange) -> AbstractContextManager[object]: ...


class _NoObserver:
    def stage(self, name: str, ex: Exchange) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


class PipelineError(AiestackError):
    code = "pipeline_misconfigured"


#: The attribute of an exception that holds the exchange as the innermost stage it passed through saw it.
FAILED_EXCHANGE = "aiestack_exchange"


def failed_exchange(exc: BaseException, default: Exchange) -> Exchange:
    """The most complete exchange an error carries (``default`` if none, or another exchange's)."""
    ex = exc.__dict__.get(FAILED_EXCHANGE)
    return ex if isinstance(ex, Exchange) and ex.id == default.id else default


async def _end_of_pipeline(ex: Exchange) -> Exchange:
    raise PipelineError(
        "The last stage of the pipeline called call_next, but no stage follows it.",
        hint="Put a terminal stage (one that produces the completion, like Generate) last.",
    )


class Pipeline:
    """Runs an exchange through ``stages`` in order; built once, shared by every request."""

    def __init__(
        self, stages: Sequence[Stage], *, observer: StageObserver | None = None, plans: RoutePlans | None = None
    ) -> None:
        if not stages:
            raise PipelineError("A pipeline needs at least one stage.", hint="Add a terminal stage such as Generate.")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise PipelineError(f"Stage names must be unique, got {names}.")
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._observer: StageObserver = observer or _NoObserver()
        self.plans = plans
        self._entry = self._chain(0)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def _chain(self, i: int) -> Next:
        if i == len(self.stages):
            return _end_of_pipeline
        stage, call_next, observer = self.stages[i], self._chain(i + 1), self._observer
        passes: Callable[[Exchange], bool] | None = getattr(stage, "passes", None)

        async def run(ex: Exchange) -> Exchange:
            # A stage with nothing to do for this exchange costs one call here instead of a frame and
            # a span (a span per idle stage was most of a request's tracing work, and a stored row each).
            if passes is not None and passes(ex):
                return await call_next(ex)
            try:
                with observer.stage(stage.name, ex):
                    return await stage(ex, call_next)
            except BaseException as exc:
                # The innermost stage the error passed through knows the most about the exchange
                # (its route, prompt version, retrieved hits): outer stages record that one.
                exc.__dict__.setdefault(FAILED_EXCHANGE, ex)
                raise

        return run

    async def __call__(self, ex: Exchange) -> Exchange:
        if ex.plan is None and self.plans is not None:
            ex = dataclasses.replace(ex, plan=self.plans.for_name(ex.request.model))
        return await self._entry(ex)
