from __future__ import annotations

import math
import random

import pytest

from aiestack.evals.ranking import bradley_terry, elo, rank, win_rates

pytestmark = pytest.mark.unit

TRUE_LOG_STRENGTH = {"weak": -1.0, "fair": 0.0, "good": 0.7, "best": 1.5}


def tournament(games_per_pair: int, seed: int, tie_rate: float = 0.0):
    rng = random.Random(seed)
    systems = sorted(TRUE_LOG_STRENGTH)
    battles = []
    for i, a in enumerate(systems):
        for b in systems[i + 1 :]:
            p_a = 1 / (1 + math.exp(TRUE_LOG_STRENGTH[b] - TRUE_LOG_STRENGTH[a]))
            for _ in range(games_per_pair):
                if rng.random() < tie_rate:
                    battles.append((a, b, "tie"))
                else:
                    battles.append((a, b, "a" if rng.random() < p_a else "b"))
    rng.shuffle(battles)
    return battles


def test_bradley_terry_recovers_known_strengths() -> None:
    ratings = bradley_terry(tournament(2000, seed=3), prior=0.0)
    assert sorted(ratings, key=ratings.get) == ["weak", "fair", "good", "best"]
    scale = 400 / math.log(10)
    mean_true = sum(TRUE_LOG_STRENGTH.values()) / 4
    for system, log_strength in TRUE_LOG_STRENGTH.items():
        recovered = (ratings[system] - 1000) / scale
        assert recovered == pytest.approx(log_strength - mean_true, abs=0.08)


def test_bootstrap_intervals_cover_the_truth_and_rank_best_first() -> None:
    result = rank(tournament(150, seed=5), bootstrap=200, seed=1)
    assert [r.system for r in result.ratings] == ["best", "good", "fair", "weak"]
    scale = 400 / math.log(10)
    mean_true = sum(TRUE_LOG_STRENGTH.values()) / 4
    for row in result.ratings:
        truth = 1000 + scale * (TRUE_LOG_STRENGTH[row.system] - mean_true)
        assert row.low < row.rating < row.high
        assert row.low - 25 < truth < row.high + 25  # the prior shrinks slightly toward the mean
        assert row.games == 450
    assert result.battles == 900


def test_ties_count_half_and_a_winless_system_stays_finite() -> None:
    battles = [("x", "y", "tie")] * 10
    ratings = bradley_terry(battles)
    assert ratings["x"] == pytest.approx(ratings["y"]) == pytest.approx(1000)
    shutout = bradley_terry([("x", "y", "a")] * 10)
    assert math.isfinite(shutout["y"]) and shutout["x"] > shutout["y"] + 400


def test_win_rate_matrix() -> None:
    battles = [("a", "b", "a"), ("a", "b", "tie"), ("b", "a", "a"), ("a", "c", "a")]
    matrix = win_rates(battles)
    assert matrix["a"]["b"] == pytest.approx(1.5 / 3)
    assert matrix["b"]["a"] == pytest.approx(1.5 / 3)
    assert matrix["a"]["c"] == 1.0 and matrix["c"]["a"] == 0.0
    assert "c" not in matrix["b"]  # never met


def test_elo_is_zero_sum_and_order_dependent() -> None:
    battles = [("a", "b", "a"), ("a", "b", "b")]
    ratings = elo(battles, k=32)
    assert sum(ratings.values()) == pytest.approx(2000)
    assert ratings["a"] != elo(list(reversed(battles)), k=32)["a"]
    # a wins at even odds (+16), then loses as the favourite (expected 1 / (1 + 10^(-32/400))).
    assert ratings["a"] == pytest.approx(1016 - 32 / (1 + 10 ** (-32 / 400)))


def test_invalid_battles() -> None:
    with pytest.raises(ValueError, match="outcome"):
        bradley_terry([("a", "b", "win")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="itself"):
        bradley_terry([("a", "a", "a")])
    with pytest.raises(ValueError, match="at least one battle"):
        rank([])
