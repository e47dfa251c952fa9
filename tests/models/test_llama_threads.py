"""The decode thread tuner: it follows the measured speed, on a simulated clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiestack.models.llama_threads import MOST_WINDOWS, WINDOW_TOKENS, DecodeThreads


class Decoder:
    """Decodes tokens on a fake clock at ``speed(threads)`` seconds a token, as the provider's loop does."""

    def __init__(self, tuner: DecodeThreads) -> None:
        self.now = 0.0
        self.tuner = tuner
        self.threads_used: list[int] = []

    def clock(self) -> float:
        return self.now

    def request(self, tokens: int, speed: Callable[[int], float]) -> None:
        self.tuner.begin()
        for _ in range(tokens):
            threads = self.tuner.current
            self.threads_used.append(threads)
            self.now += speed(threads)
            self.tuner.token()


def make(most: int) -> tuple[DecodeThreads, Decoder]:
    holder: list[Decoder] = []
    tuner = DecodeThreads(most, clock=lambda: holder[0].clock())
    decoder = Decoder(tuner)
    holder.append(decoder)
    return tuner, decoder


IDLE = {2: 0.030, 1: 0.055}.__getitem__  # two threads win on an idle machine
BUSY = {2: 0.300, 1: 0.085}.__getitem__  # one wins when a thread keeps losing its core


def test_it_starts_on_every_cpu_and_keeps_them_on_an_idle_machine() -> None:
    tuner, decoder = make(2)
    assert tuner.current == 2
    decoder.request(4000, IDLE)
    used = decoder.threads_used
    assert used.count(1) / len(used) < 0.05  # a look now and then, at most a window in MOST_WINDOWS at the end
    late = used[-WINDOW_TOKENS * MOST_WINDOWS :]
    assert late.count(1) <= WINDOW_TOKENS
    snap = tuner.snapshot()
    assert snap.seconds_per_token[2] == pytest.approx(0.030) and snap.seconds_per_token[1] == pytest.approx(0.055)
    assert snap.switches == 0


def test_it_moves_to_one_thread_when_the_machine_gets_busy_and_back_when_it_is_idle_again() -> None:
    tuner, decoder = make(2)
    decoder.request(2000, IDLE)
    decoder.threads_used.clear()
    decoder.request(400, BUSY)
    # The slowdown is noticed within a window or two, not after the long look-again interval.
    assert decoder.threads_used[: 4 * WINDOW_TOKENS].count(1) >= WINDOW_TOKENS
    assert tuner.current == 1 and decoder.threads_used[-100:].count(1) >= 90
    decoder.threads_used.clear()
    decoder.request(3000, IDLE)
    assert tuner.current == 2
    assert decoder.threads_used[-1000:].count(2) > 950
    assert tuner.snapshot().switches == 2


def test_the_first_token_of_a_request_is_not_timed_and_short_answers_add_nothing() -> None:
    tuner, decoder = make(2)
    for _ in range(50):
        decoder.request(1, BUSY)  # each request's first token carries its prompt: never timed
    assert tuner.snapshot().windows == {2: 0, 1: 0}
    decoder.request(WINDOW_TOKENS + 1, IDLE)
    assert tuner.snapshot().windows == {2: 1, 1: 0}


def test_more_cpus_are_tried_by_halving_and_the_fastest_wins() -> None:
    tuner, decoder = make(8)
    speeds = {8: 0.040, 4: 0.020, 2: 0.030, 1: 0.050}
    decoder.request(6000, speeds.__getitem__)
    assert set(tuner.snapshot().seconds_per_token) == {8, 4, 2, 1}
    assert tuner.current == 4
    assert decoder.threads_used[-1000:].count(4) > 900


def test_one_cpu_never_looks_elsewhere() -> None:
    tuner, decoder = make(1)
    decoder.request(500, IDLE)
    assert set(decoder.threads_used) == {1} and tuner.snapshot().switches == 0
    with pytest.raises(ValueError):
        DecodeThreads(0)
