"""scripts/train_lexical_injection.py, which trains the default injection head: how it chooses C and the
threshold, and that its grouped cross-validation gives the same folds on every run.

The grouped cross-validation must give the same folds on every run. Its near-duplicate group ids once depended on
PYTHONHASHSEED (the union-find root followed the order sets are walked in, and StratifiedGroupKFold
assigns groups to folds by id), so the chosen C and threshold changed from run to run. A group is now
named by its first member, which no walking order changes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Written for this test: three near-duplicate families and two loners.
TEXTS = [
    "please tell me the opening hours of the city library on sunday",
    "the weather in the mountains is cold and windy this week",
    "please tell me the opening hours of the city library on monday",
    "what is the capital of the country with the most islands",
    "the weather in the mountains is cold and windy this weekend",
    "please tell me the opening hours of the city library on friday morning",
    "how many legs does a spider have and why",
    "the weather in the mountains is cold and windy this week again",
    "what is the capital of the country with the most islands in europe",
]


@pytest.fixture(scope="module")
def trainer() -> ModuleType:
    import train_lexical_injection
    return train_lexical_injection


@pytest.mark.unit
def test_near_duplicate_groups_are_named_by_their_first_member(trainer: ModuleType) -> None:
    near_duplicate_groups = trainer.near_duplicate_groups
    assert near_duplicate_groups(TEXTS).tolist() == [0, 1, 0, 3, 1, 0, 6, 1, 3]
    assert near_duplicate_groups(TEXTS[::-1]).tolist() == [0, 1, 2, 3, 1, 0, 3, 1, 3]


@pytest.mark.unit
def test_choose_takes_the_best_deepset_f1_that_meets_the_other_targets(trainer: ModuleType) -> None:
    # (deepset F1, jailbreak F1, benign-mention false alarms, ordinary false alarms) per (C, threshold)
    figs = {
        (4.0, 0.5): (0.95, 0.94, 0.0, 0.0),  # the best deepset F1, but jailbreak below 0.95
        (16.0, 0.5): (0.86, 0.97, 0.02, 0.0),
        (16.0, 0.55): (0.88, 0.95, 0.015, 0.02),  # chosen: meets the three others, best deepset F1 of those
        (64.0, 0.5): (0.90, 0.96, 0.025, 0.0),  # benign false alarms above 2%
    }
    assert trainer.choose(figs) == (16.0, 0.55)


@pytest.mark.unit
def test_choose_falls_back_to_the_largest_smallest_margin(trainer: ModuleType) -> None:
    figs = {
        (4.0, 0.5): (0.90, 0.94, 0.0, 0.0),  # smallest margin -0.01 (jailbreak)
        (16.0, 0.5): (0.84, 0.96, 0.021, 0.0),  # -0.01 (deepset)
        (64.0, 0.5): (0.86, 0.949, 0.03, 0.0),  # -0.01 (benign)
        (64.0, 0.55): (0.849, 0.951, 0.0, 0.021),  # chosen: -0.001
    }
    assert trainer.choose(figs) == (64.0, 0.55)


@pytest.mark.unit
def test_the_static_heads_choice_holds_ordinary_and_chat_false_alarms_to_one_percent() -> None:
    """scripts/train_static_injection.py: the bar declared for the ``static`` head (jailbreak F1 >= 0.955,
    benign false alarms <= 2%, ordinary requests and chat, bare and prefixed, <= 1%), then the best deepset F1."""
    import train_static_injection as static
    # (deepset F1, jailbreak F1, benign, ordinary, chat, "Message: " chat false alarms) per (chat weight, C, beta, t)
    figs = {
        (1.0, 3.0, 0.3, 0.5): (0.93, 0.96, 0.01, 0.012, 0.0, 0.0),  # the best deepset F1, but ordinary false alarms above 1%
        (1.0, 10.0, 0.4, 0.45): (0.92, 0.96, 0.01, 0.005, 0.002, 0.011),  # prefixed chat above 1%
        (0.5, 10.0, 0.4, 0.45): (0.90, 0.958, 0.016, 0.01, 0.01, 0.004),  # chosen
        (2.0, 10.0, 0.5, 0.5): (0.91, 0.954, 0.016, 0.009, 0.0, 0.0),  # jailbreak below 0.955
        (2.0, 30.0, 0.5, 0.5): (0.89, 0.96, 0.01, 0.005, 0.0, 0.0),
    }
    assert static.choose(figs) == (0.5, 10.0, 0.4, 0.45)
    nothing_meets = {(1.0, 3.0, 0.3, 0.5): (0.93, 0.96, 0.03, 0.0, 0.0, 0.0), (1.0, 3.0, 0.4, 0.5): (0.895, 0.96, 0.0, 0.0, 0.0, 0.012)}
    assert static.choose(nothing_meets) == (1.0, 3.0, 0.4, 0.5)  # smallest margin -0.002 against -0.01


@pytest.mark.unit
def test_the_static_heads_chat_negatives_come_from_the_davidson_train_part_only() -> None:
    """guard_data.chat_negatives: a seeded sample of the train part, decoded; no tweet of the test part, which
    bench/guardrails.py measures the heads' chat false alarms on (counts only: the texts are offensive)."""
    import html
    import os

    data = Path(os.environ.get("AIESTACK_DATA", ROOT.parent / "shared" / "data"))
    if not (data / "davidson-hate-offensive").is_dir():
        pytest.skip("../shared/data/davidson-hate-offensive is not here (set AIESTACK_DATA)")
    from guard_data import CHAT_TWEETS, chat_negatives, davidson_split
    chat = chat_negatives(data)
    assert len(chat) == CHAT_TWEETS and chat == chat_negatives(data)
    train = {html.unescape(t) for t in davidson_split(data, "train")[0]}
    test = {html.unescape(t) for t in davidson_split(data, "test")[0]}
    assert set(chat) <= train and not set(chat) & test
    assert chat_negatives(data, 10) == chat[:10]
