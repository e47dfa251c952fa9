"""scripts/train_lexical_injection.py: the grouped cross-validation that chooses the default head's C and
threshold must give the same folds on every run. Its near-duplicate group ids once depended on
PYTHONHASHSEED (the union-find root followed the order sets are walked in, and StratifiedGroupKFold
assigns groups to folds by id), so the chosen C and threshold changed from run to run. A group is now
named by its first member, which no walking order changes."""

from __future__ import annotations

import sys
from pathlib import Path

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


@pytest.mark.unit
def test_near_duplicate_groups_are_named_by_their_first_member() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from train_lexical_injection import near_duplicate_groups
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert near_duplicate_groups(TEXTS).tolist() == [0, 1, 0, 3, 1, 0, 6, 1, 3]
    assert near_duplicate_groups(TEXTS[::-1]).tolist() == [0, 1, 2, 3, 1, 0, 3, 1, 3]
