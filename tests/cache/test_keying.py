"""Cache keys: what changes an answer changes the key; what does not, does not."""

from __future__ import annotations

import dataclasses

import pytest

from aiestack.cache.keying import (
    exact_key,
    fingerprint_of,
    normalise_query,
    semantic_partition,
    split_last_user_turn,
)
from aiestack.types import ChatRequest, ContentPart, Message, Params

pytestmark = pytest.mark.unit


def request(text: str = "What is the capital of France?", **params: object) -> ChatRequest:
    return ChatRequest(
        model="support",
        messages=(Message("system", "Be brief."), Message("user", text)),
        params=Params(temperature=0, **params),  # type: ignore[arg-type]
    )


def test_the_key_ignores_user_stream_metadata_stop_order_and_edge_whitespace() -> None:
    base = request(stop=("a", "b"))
    same = [
        dataclasses.replace(base, user="alice", stream=True, metadata={"trace": "1"}),
        dataclasses.replace(base, params=Params(temperature=0, stop=("b", "a"))),
        dataclasses.replace(
            base, messages=(Message("system", "Be brief.  "), Message("user", "  What is the capital of France?\n"))
        ),
    ]
    key = exact_key(base, tenant="t")
    assert all(exact_key(r, tenant="t") == key for r in same)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: dataclasses.replace(r, model="other-route"),
        lambda r: dataclasses.replace(r, params=Params(temperature=0, max_tokens=5)),
        lambda r: dataclasses.replace(r, params=Params(temperature=0, seed=7)),
        lambda r: dataclasses.replace(r, params=Params(temperature=0.5)),
        lambda r: dataclasses.replace(r, messages=(Message("system", "Be long."), r.messages[1])),
        lambda r: dataclasses.replace(r, messages=(r.messages[0], Message("user", "What is the capital of Spain?"))),
        lambda r: dataclasses.replace(r, messages=r.messages[1:]),
    ],
)
def test_what_changes_the_answer_changes_the_key(change: object) -> None:
    base = request()
    assert exact_key(change(base), tenant="t") != exact_key(base, tenant="t")  # type: ignore[operator]


def test_tenant_and_fingerprint_are_part_of_both_keys() -> None:
    r = request()
    earlier = r.messages[:-1]
    assert exact_key(r, tenant="a") != exact_key(r, tenant="b")
    assert exact_key(r, tenant="a", fingerprint="v1") != exact_key(r, tenant="a", fingerprint="v2")
    assert semantic_partition(r, earlier, tenant="a") != semantic_partition(r, earlier, tenant="b")
    assert semantic_partition(r, earlier, tenant="a", fingerprint="1") != semantic_partition(
        r, earlier, tenant="a", fingerprint="2"
    )


def test_the_partition_excludes_the_last_turn_but_includes_the_conversation_before_it() -> None:
    a, b = request("How do I reset my password?"), request("How can I reset my password?")
    split_a, split_b = split_last_user_turn(a.messages), split_last_user_turn(b.messages)
    assert split_a is not None and split_b is not None
    assert semantic_partition(a, split_a[0], tenant="t") == semantic_partition(b, split_b[0], tenant="t")
    other_history = (Message("system", "Answer in French."),)
    assert semantic_partition(a, other_history, tenant="t") != semantic_partition(a, split_a[0], tenant="t")


def test_only_a_plain_text_last_user_turn_is_looked_up_by_meaning() -> None:
    assert split_last_user_turn((Message("user", "hi"), Message("assistant", "hello"))) is None
    image = Message("user", (ContentPart("text", text="what is this?"), ContentPart("image_url", url="x")))
    assert split_last_user_turn((image,)) is None
    assert split_last_user_turn((Message("user", "   "),)) is None
    split = split_last_user_turn((Message("system", "s"), Message("user", "q")))
    assert split is not None and split[1].text == "q" and len(split[0]) == 1


def test_normalisation_and_fingerprints() -> None:
    assert normalise_query("  What IS   the Capital?? ") == "what is the capital"
    assert fingerprint_of({"a": 1, "b": 2}) == fingerprint_of({"b": 2, "a": 1})
    assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})
