"""Comparative ranking: Bradley–Terry ratings with bootstrap intervals, Elo, and a win-rate matrix.

Input is a list of *battles* ``(system_a, system_b, outcome)`` with outcome ``"a"``, ``"b"`` or
``"tie"`` (from :meth:`aiestack.evals.judges.PairwiseResult.battle` or human preference data).

Bradley–Terry models ``P(i beats j) = p_i / (p_i + p_j)``. It is fitted by maximum likelihood with
Hunter's MM algorithm (2004), ties counting as half a win for each side (as Chatbot Arena does).
A small symmetric prior (``prior`` virtual tied games between every pair that met) keeps a
system that never won finite instead of at zero. Ratings are reported on the Elo scale,
``400·log10(p) + 1000`` with the geometric mean strength at 1000, so a 400-point gap means 10:1
odds. Intervals come from resampling battles with replacement. Elo (sequential, K-factor) is
included for reference: it depends on battle order, which is exactly why Bradley–Terry is preferred.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Outcome = Literal["a", "b", "tie"]
Battle = tuple[str, str, Outcome]
BASE = 1000.0
SCALE = 400.0 / math.log(10)  # natural-log strength → Elo points


@dataclass(frozen=True, slots=True)
class Rating:
    system: str
    rating: float  # Bradley–Terry, Elo scale
    low: float  # bootstrap interval
    high: float
    elo: float  # sequential Elo, for reference
    wins: int
    losses: int
    ties: int

    @property
    def games(self) -> int:
        return self.wins + self.losses + self.ties


@dataclass(frozen=True, slots=True)
class Ranking:
    """Systems best first, and ``win_rate[a][b]``: a's share of points against b (ties count half)."""

    ratings: tuple[Rating, ...]
    win_rate: Mapping[str, Mapping[str, float]]
    battles: int


def _check(battles: Sequence[Battle]) -> list[str]:
    systems: dict[str, None] = {}
    for a, b, outcome in battles:
        if outcome not in ("a", "b", "tie"):
            raise ValueError(f"a battle outcome must be 'a', 'b' or 'tie', got {outcome!r}")
        if a == b:
            raise ValueError(f"a system cannot battle itself ({a!r})")
        systems.setdefault(a)
        systems.setdefault(b)
    return sorted(systems)


def _tallies(battles: Iterable[Battle], index: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """``wins[i, j]``: points i scored against j (ties half); ``games[i, j]``: games between them."""
    n = len(index)
    wins, games = np.zeros((n, n)), np.zeros((n, n))
    for a, b, outcome in battles:
        i, j = index[a], index[b]
        games[i, j] += 1
        games[j, i] += 1
        points = 1.0 if outcome == "a" else 0.0 if outcome == "b" else 0.5
        wins[i, j] += points
        wins[j, i] += 1.0 - points
    return wins, games


def _fit(wins: np.ndarray, games: np.ndarray, prior: float, iterations: int, tol: float) -> np.ndarray:
    """Log-strengths by MM: ``p_i ← W_i / Σ_j n_ij / (p_i + p_j)``, renormalised to geometric mean 1."""
    met = games > 0
    games = games + prior * met
    wins = wins + prior / 2 * met
    total_wins = wins.sum(axis=1)
    p = np.ones(len(wins))
    for _ in range(iterations):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total_wins / np.where(denom > 0, denom, 1.0), p)
        new = np.maximum(new, 1e-12)
        new /= math.exp(np.log(new).mean())
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    return np.log(p)


def bradley_terry(
    battles: Sequence[Battle], *, prior: float = 0.1, iterations: int = 10_000, tol: float = 1e-10
) -> dict[str, float]:
    """Bradley–Terry ratings on the Elo scale (geometric-mean system at 1000)."""
    systems = _check(battles)
    index = {s: i for i, s in enumerate(systems)}
    log_p = _fit(*_tallies(battles, index), prior, iterations, tol)
    return {s: BASE + SCALE * float(log_p[index[s]]) for s in systems}


def elo(battles: Sequence[Battle], *, k: float = 32.0, initial: float = BASE) -> dict[str, float]:
    """Sequential Elo over the battles in the order given (order matters; that is Elo's flaw)."""
    _check(battles)
    ratings: dict[str, float] = {}
    for a, b, outcome in battles:
        ra, rb = ratings.setdefault(a, initial), ratings.setdefault(b, initial)
        expected = 1.0 / (1.0 + 10 ** ((rb - ra) / 400.0))
        actual = 1.0 if outcome == "a" else 0.0 if outcome == "b" else 0.5
        ratings[a] = ra + k * (actual - expected)
        ratings[b] = rb - k * (actual - expected)
    return ratings


def win_rates(battles: Sequence[Battle]) -> dict[str, dict[str, float]]:
    """``matrix[a][b]``: a's points per game against b (ties half); pairs that never met are absent."""
    systems = _check(battles)
    index = {s: i for i, s in enumerate(systems)}
    wins, games = _tallies(battles, index)
    return {
        a: {b: float(wins[i, j] / games[i, j]) for j, b in enumerate(systems) if games[i, j] > 0}
        for i, a in enumerate(systems)
    }


def rank(
    battles: Sequence[Battle],
    *,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    prior: float = 0.1,
    elo_k: float = 32.0,
) -> Ranking:
    """Bradley–Terry ratings with percentile bootstrap intervals, Elo, tallies and the win-rate matrix."""
    if not battles:
        raise ValueError("ranking needs at least one battle")
    systems = _check(battles)
    index = {s: i for i, s in enumerate(systems)}
    ratings = bradley_terry(battles, prior=prior)
    rng = np.random.default_rng(seed)
    samples = np.empty((bootstrap, len(systems)))
    outcomes = list(battles)
    for r in range(bootstrap):
        picked = rng.integers(0, len(outcomes), size=len(outcomes))
        wins, games = _tallies((outcomes[i] for i in picked), index)
        samples[r] = BASE + SCALE * _fit(wins, games, prior, 2000, 1e-8)
    tail = (1 - confidence) / 2 * 100
    lows, highs = np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)
    sequential = elo(battles, k=elo_k)
    record = {s: [0, 0, 0] for s in systems}
    for a, b, outcome in battles:
        slot = {"a": (0, 1), "b": (1, 0), "tie": (2, 2)}[outcome]
        record[a][slot[0]] += 1
        record[b][slot[1]] += 1
    rows = [
        Rating(s, ratings[s], float(lows[i]), float(highs[i]), sequential[s], *record[s])
        for s, i in index.items()
    ]
    rows.sort(key=lambda row: row.rating, reverse=True)
    return Ranking(tuple(rows), win_rates(battles), len(battles))
