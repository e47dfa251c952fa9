"""Batch work in this process or on a Ray cluster, behind one small protocol.

A batch step (embedding an ingest's chunks, scoring an eval run, later the flywheel's curation and
synthesis) is "apply one function to many items". :class:`BatchRunner` does exactly that::

    runner = open_runner(settings.compute)          # Ray when [compute] ray_address is set
    vectors = await runner.map(EmbedTexts(cfg), batches)
    await runner.aclose()

- :class:`InProcessRunner` calls the function in worker threads of this process.
- :class:`RayRunner` ships it to Ray: ``ray_workers`` actors each receive the function once (so a
  function object that loads a model on its first call loads it once per actor, not per item) and
  take items from a shared queue (``ray.util.ActorPool``).

Both return the results in the order of the items, and re-raise the first error. The function
must be picklable for Ray: a module-level function, or an instance of a module-level class.
Results are identical whichever runner ran them (a conformance suite checks both, and the ingest
tests compare the stored vectors).

``[compute] ray_address``: empty runs in-process; ``local`` starts a Ray instance inside this
process tree; anything else (``auto``, ``ray://head:10001``) connects to a running cluster.

:class:`Checkpoint` makes a long step resumable: each finished item's result is appended to a JSONL
file named by a hash of the step's inputs, so the same step started again (same inputs) skips the
items it finished and does only the rest; the file is removed when the step completes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from aiestack.errors import ConfigError
from aiestack.settings import ComputeSettings

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class BatchRunner(Protocol):
    """Applies a function to items, somewhere; results in item order."""

    name: str

    async def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, possibly in parallel and elsewhere; raises fn's first error."""
        ...

    async def aclose(self) -> None:
        """Release what the runner started (threads, a local Ray instance). Idempotent."""
        ...


class InProcessRunner:
    """Runs the function in up to ``max_workers`` threads of this process (the default runner)."""

    name = "in-process"

    def __init__(self, max_workers: int = 1) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers

    async def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        gate = asyncio.Semaphore(self._max_workers)

        async def one(item: T) -> R:
            async with gate:
                return await asyncio.to_thread(fn, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def aclose(self) -> None:
        return None


class _Holder:
    """A Ray actor's payload: the function, received once, called per item."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self._fn = fn

    def call(self, item: Any) -> Any:
        return self._fn(item)


class RayRunner:
    """Runs the function on Ray, in ``workers`` actors.

    ``address`` is ``"local"`` (start a Ray instance here, stopped by :meth:`aclose`) or a Ray
    address (``"auto"``, ``"ray://head:10001"``). Ray is imported and initialised on first use.

    Every Ray call runs on one thread the runner keeps until :meth:`aclose`: a local Ray's
    processes are tied to the thread that started them (they stop when it exits), so that thread
    must outlive them — a pool thread of ``asyncio.to_thread`` would not.
    """

    name = "ray"

    def __init__(self, address: str, *, workers: int = 2, num_cpus: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._address = address
        self._workers = workers
        self._num_cpus = num_cpus
        self._started_here = False
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="aiestack-ray")

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "compute.ray_address", "Ray is not installed", "pip install 'aiestack[ray]', or leave compute.ray_address empty"
            ) from exc
        with self._lock:
            if not ray.is_initialized():
                local = self._address == "local"
                ray.init(
                    address=None if local else self._address,
                    num_cpus=self._num_cpus if local else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
                self._started_here = local
        return ray

    def _run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        ray = self._ray()
        from ray.util import ActorPool

        holder = ray.remote(num_cpus=0)(_Holder)
        actors = [holder.remote(fn) for _ in range(min(self._workers, len(items)))]
        try:
            pool = ActorPool(actors)
            return list(pool.map(lambda actor, item: actor.call.remote(item), list(items)))
        finally:
            for actor in actors:
                ray.kill(actor)

    async def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if not items:
            return []
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, fn, items)

    async def aclose(self) -> None:
        if self._started_here:
            import ray

            await asyncio.get_running_loop().run_in_executor(self._thread, ray.shutdown)
            self._started_here = False
        self._thread.shutdown(wait=False)


def open_runner(settings: ComputeSettings) -> BatchRunner:
    """The runner ``[compute]`` asks for: Ray when ``ray_address`` is set, else in-process."""
    if settings.ray_address:
        return RayRunner(settings.ray_address, workers=settings.ray_workers)
    return InProcessRunner(settings.workers)


class Checkpoint:
    """The finished items of one batch step, kept in ``directory`` until the step completes.

    ``Checkpoint.open(directory, step, inputs)`` names the file by ``step`` and the sha256 of
    ``inputs`` (JSON: everything the step's results depend on — model, prompt versions, options, the
    items' ids), so a step started with other inputs never reuses another's results. ``record``
    appends one item's JSON result and flushes it; a line torn by a kill mid-write is ignored on
    reopening (that item is simply done again). ``finish`` removes the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._done: dict[str, Any] = {}
        if path.exists():
            torn = False
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._done[str(entry["item"])] = entry["result"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    torn = True  # a line cut short by a kill: that item is done again
            if torn:  # rewrite without it, so the next line appended starts on a line of its own
                path.write_text("".join(self._line(k, v) for k, v in self._done.items()), encoding="utf-8")
        self.resumed = len(self._done)  # items already finished when the step (re)started
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path, step: str, inputs: Mapping[str, Any]) -> Checkpoint:
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / f"{step}-{digest}.jsonl")

    def __contains__(self, item: str) -> bool:
        return item in self._done

    def get(self, item: str) -> Any:
        """The recorded result of ``item`` (KeyError when it is not finished)."""
        return self._done[item]

    def record(self, item: str, result: Any) -> None:
        line = self._line(item, result)
        with self._lock:
            self._done[item] = result
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)

    @staticmethod
    def _line(item: str, result: Any) -> str:
        return json.dumps({"item": item, "result": result}, default=str) + "\n"

    def finish(self) -> None:
        """The step completed: forget its items."""
        with self._lock:
            self.path.unlink(missing_ok=True)
            self._done.clear()
