"""How many CPU threads the embedded model decodes with: measured while it decodes, not assumed.

llama.cpp splits every operation of a token's graph across its threads and has them meet at a
barrier after each one, a few hundred times a token. On an idle machine two threads on two cores
decode faster than one. On a busy one a thread that the scheduler takes off its core holds every
barrier while its partner spins, and which count wins depends on what else runs: on this project's
2-core VM (2026-12-07), beside other sessions' test runs and valgrind at load average ~7, Gemma 3
270M decoded 3–4 tokens/s with two threads and 12 with one (llama-cpp-python directly, 48 greedy
tokens); beside two spinning processes at normal priority, 6.2 with two and 3.8 with one
(``bench/embedded_threads.py``). No fixed setting is right in every case, and the load changes while
a server runs, so when ``n_threads`` is not configured the provider measures instead.

:class:`DecodeThreads` times the decoding in windows of a few tokens, keeps a moving average of
seconds a token for each candidate thread count (all available CPUs, then halving down to one), and
decodes with the fastest. It tries another candidate for one window now and then: after a number of
windows that doubles each time the current choice is confirmed (so on a steady machine the cost of
looking falls to about one window in :data:`MOST_WINDOWS`), and at once when the current choice has
become markedly slower than it was when chosen (the load has changed). Thread counts change
between tokens with ``llama_set_n_threads``, which leaves the answer's tokens as they were (each
output value is computed whole by one thread; a test compares answers decoded with one and two
threads). Prompt evaluation keeps every CPU: batches do far more work between barriers.

It lives in the model's single worker thread, so it needs no lock; its :meth:`snapshot` is for
benchmarks and tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: Tokens a window: long enough to average out one token's noise, short enough to react within a second.
WINDOW_TOKENS = 8
#: The first interval (in windows of the current choice) before trying another candidate...
FEWEST_WINDOWS = 4
#: ... and the longest, reached by doubling while the current choice keeps winning.
MOST_WINDOWS = 64
#: The current choice is re-examined at once when it has become this much slower than when chosen.
SLOWDOWN = 1.4
#: Weight of the latest window in a candidate's moving average.
_ALPHA = 0.5


@dataclass(frozen=True, slots=True)
class ThreadsSnapshot:
    """What the tuner knows: seconds a token per candidate (None: not measured yet), windows decoded each."""

    current: int
    seconds_per_token: dict[int, float | None]
    windows: dict[int, int]
    switches: int


class DecodeThreads:
    """Chooses the decode thread count from measured speed (see the module docstring)."""

    def __init__(self, most: int, *, clock: Callable[[], float] = time.perf_counter) -> None:
        if most < 1:
            raise ValueError(f"most must be at least 1, got {most}")
        self._candidates = _halvings(most)
        self._clock = clock
        self._estimate: dict[int, float | None] = dict.fromkeys(self._candidates)
        self._windows = dict.fromkeys(self._candidates, 0)
        self._chosen = most  # what the measurements favour
        self._current = most  # what runs now (the chosen one, or one being tried)
        self._chosen_at: float | None = None  # the chosen one's best seconds a token since it was chosen
        self._interval = FEWEST_WINDOWS
        self._since_look = 0
        self._start: float | None = None
        self._tokens = 0
        self._switches = 0

    @property
    def current(self) -> int:
        return self._current

    def begin(self) -> None:
        """A request's decoding starts (after its prompt): the partial window of the last one is dropped."""
        self._start, self._tokens = None, 0

    def token(self) -> int | None:
        """One token has been decoded; the thread count for the next ones when it changes, else None."""
        now = self._clock()
        if self._start is None:  # the first token carries the prompt's evaluation: start timing after it
            self._start = now
            return None
        self._tokens += 1
        if self._tokens < WINDOW_TOKENS:
            return None
        per_token = (now - self._start) / self._tokens
        self._start, self._tokens = now, 0
        before = self._current
        self._record(per_token)
        return None if self._current == before else self._current

    def snapshot(self) -> ThreadsSnapshot:
        return ThreadsSnapshot(self._current, dict(self._estimate), dict(self._windows), self._switches)

    def _record(self, per_token: float) -> None:
        ran = self._current
        old = self._estimate[ran]
        self._estimate[ran] = per_token if old is None else _ALPHA * per_token + (1 - _ALPHA) * old
        self._windows[ran] += 1
        if ran != self._chosen:  # a trial window: keep the faster
            best = min(
                (c for c in self._candidates if self._estimate[c] is not None),
                key=lambda c: self._estimate[c] or 0.0,
            )
            if best != self._chosen:
                self._chosen, self._interval = best, FEWEST_WINDOWS
                self._switches += 1
            else:
                self._interval = min(2 * self._interval, MOST_WINDOWS)
            self._chosen_at = self._estimate[self._chosen]
            self._current, self._since_look = self._chosen, 0
            return
        estimate = self._estimate[ran] or 0.0
        self._chosen_at = estimate if self._chosen_at is None else min(self._chosen_at, estimate)
        self._since_look += 1
        slower = estimate > SLOWDOWN * self._chosen_at
        if len(self._candidates) > 1 and (slower or self._since_look >= self._interval):
            if slower:
                self._interval = FEWEST_WINDOWS
            self._current = self._next_trial()

    def _next_trial(self) -> int:
        """The candidate to try: one never measured first, else the one measured in fewest windows."""
        others = [c for c in self._candidates if c != self._chosen]
        return min(others, key=lambda c: (self._estimate[c] is not None, self._windows[c]))


def _halvings(most: int) -> tuple[int, ...]:
    """``most``, then halvings down to 1: 8 → (8, 4, 2, 1); 6 → (6, 3, 1)."""
    out = [most]
    while out[-1] > 1:
        out.append(max(1, out[-1] // 2))
    return tuple(out)
