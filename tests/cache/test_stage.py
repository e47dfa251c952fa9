"""The Cache stage in a pipeline: exact and semantic hits, near misses, isolation, what is never stored."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from aiestack.cache.config import CachePolicy
from aiestack.cache.stage import (
    CACHE_REJECTED,
    CACHE_SAVED_TOKENS,
    CACHE_SAVED_USD,
    CACHE_SOURCE,
    CACHE_STATUS,
    header_value,
)
from aiestack.errors import ProviderBadRequest, StoreError
from aiestack.models.fake import Script
from aiestack.pipeline import Next
from aiestack.stores.cache import CachedAnswer, Entry
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.streams import collect
from aiestack.tracing import CACHE_KIND
from aiestack.types import Chunk, Exchange, Hit, Verdict

from .conftest import MODEL, Kit, make_kit

pytestmark = pytest.mark.unit

QUESTION = "How do I reset my password?"


async def test_an_identical_deterministic_request_is_served_from_the_exact_cache(kit: Kit) -> None:
    kit.model.enqueue(["Click 'Forgot password'."])
    first = await kit.ask(QUESTION)
    assert header_value(first) == "miss" and first.outcome == "ok" and not first.completion.cached
    second = await kit.ask(QUESTION)
    assert len(kit.model.requests) == 1
    assert header_value(second) == "hit" and second.attributes[CACHE_KIND] == "exact"
    assert second.outcome == "cached"
    completion = second.completion
    assert completion is not None and completion.cached and completion.text == "Click 'Forgot password'."
    # Honest accounting: this request used nothing and cost nothing; the saving is recorded.
    assert completion.usage.total_tokens == 0 and completion.cost_usd == 0.0
    original = first.completion
    assert original is not None and original.cost_usd
    assert second.attributes[CACHE_SAVED_USD] == pytest.approx(original.cost_usd)
    assert second.attributes[CACHE_SAVED_TOKENS] == original.usage.total_tokens
    assert second.attributes[CACHE_SOURCE] == first.id


async def test_a_paraphrase_is_a_semantic_hit_and_a_negation_is_not() -> None:
    kit = make_kit(threshold=0.7)
    kit.model.enqueue(["Yes, in low doses.", "Here is why."])
    await kit.ask("Is aspirin safe during pregnancy?")
    paraphrase = await kit.ask("is aspirin safe during a pregnancy")
    assert header_value(paraphrase) == "semantic-hit"
    assert paraphrase.attributes[CACHE_KIND] == "semantic"
    assert paraphrase.completion is not None and paraphrase.completion.text == "Yes, in low doses."
    negation = await kit.ask("Is aspirin not safe during pregnancy?")
    assert header_value(negation) == "miss"
    assert negation.attributes[CACHE_REJECTED] == ("negation",)
    assert negation.completion is not None and negation.completion.text == "Here is why."
    assert len(kit.model.requests) == 2


async def test_a_tenant_never_receives_another_tenants_answer(kit: Kit) -> None:
    kit.model.enqueue(["for tenant a", "for tenant b"])
    await kit.ask(QUESTION, tenant="a")
    other = await kit.ask(QUESTION, tenant="b")
    assert header_value(other) == "miss" and other.completion is not None
    assert other.completion.text == "for tenant b"
    assert header_value(await kit.ask(QUESTION, tenant="a")) == "hit"


async def test_a_new_route_fingerprint_invalidates_the_routes_entries(kit: Kit) -> None:
    kit.model.enqueue(["old answer", "new answer"])
    kit.fingerprints[MODEL] = "collection=1"
    await kit.ask(QUESTION)
    kit.fingerprints[MODEL] = "collection=2"  # e.g. a re-ingest bumped the collection version
    fresh = await kit.ask(QUESTION)
    assert header_value(fresh) == "miss" and fresh.completion is not None
    assert fresh.completion.text == "new answer"


async def test_only_deterministic_requests_are_cached_unless_opted_in(kit: Kit) -> None:
    for temperature in (None, 0.7):
        ex = await kit.ask(QUESTION, temperature=temperature)
        assert header_value(ex) == "bypass"
    assert header_value(await kit.ask(QUESTION, temperature=0.7)) == "bypass"  # nothing was stored
    opted = await kit.ask("opt in please", temperature=0.7, metadata={"cache": "on"})
    assert header_value(opted) == "miss"
    assert header_value(await kit.ask("opt in please", temperature=0.7, metadata={"cache": "on"})) == "hit"


async def test_request_flags_off_and_refresh(kit: Kit) -> None:
    kit.model.enqueue(["one", "two", "three"])
    assert header_value(await kit.ask(QUESTION, metadata={"cache": "off"})) == "bypass"
    assert header_value(await kit.ask(QUESTION)) == "miss"  # "off" stored nothing
    refreshed = await kit.ask(QUESTION, metadata={"cache": "refresh"})
    assert header_value(refreshed) == "miss" and refreshed.completion is not None
    assert refreshed.completion.text == "three"
    served = await kit.ask(QUESTION)
    assert served.completion is not None and served.completion.text == "three"  # refresh replaced it


async def test_a_route_policy_overrides_the_defaults() -> None:
    kit = make_kit(policies={MODEL: CachePolicy(semantic=False, deterministic_only=False)})
    kit.model.enqueue(["a", "b"])
    await kit.ask(QUESTION, temperature=1.0)
    assert header_value(await kit.ask(QUESTION, temperature=1.0)) == "hit"
    assert header_value(await kit.ask("How do I reset my password please?", temperature=1.0)) == "miss"


def verdict_stage(action: str) -> object:
    class AddVerdict:
        name = "output_guard"

        async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
            result = await call_next(ex)
            return dataclasses.replace(result, verdicts=(*result.verdicts, Verdict("leak", action)))  # type: ignore[arg-type]

    return AddVerdict()


@pytest.mark.parametrize("action", ["block", "flag"])
async def test_answers_an_output_guard_blocked_or_flagged_are_not_stored(action: str) -> None:
    kit = make_kit(inner=[verdict_stage(action)])
    await kit.ask(QUESTION)
    assert header_value(await kit.ask(QUESTION)) == "miss"
    assert len(kit.model.requests) == 2


async def test_flagged_answers_are_stored_when_the_policy_says_so() -> None:
    kit = make_kit(inner=[verdict_stage("flag")], policies={MODEL: CachePolicy(store_flagged=True)})
    await kit.ask(QUESTION)
    assert header_value(await kit.ask(QUESTION)) == "hit"


async def test_a_failed_request_is_not_stored(kit: Kit) -> None:
    kit.model.enqueue([Script(error=ProviderBadRequest("nope", provider="fake")), "fine"])
    with pytest.raises(ProviderBadRequest):
        await kit.ask(QUESTION)
    ex = await kit.ask(QUESTION)
    assert header_value(ex) == "miss" and ex.completion is not None and ex.completion.text == "fine"


async def test_a_stream_is_stored_when_it_ends_cleanly_and_served_as_a_stream(kit: Kit) -> None:
    kit.model.enqueue(["streamed answer"])
    first = await kit.ask(QUESTION, stream=True)
    assert first.completion is not None
    assert len(kit.backend) == 0  # nothing until the stream has ended
    assert (await collect(first.completion)).text == "streamed answer"
    second = await kit.ask(QUESTION, stream=True)
    assert header_value(second) == "hit" and second.completion is not None
    assert second.completion.stream is not None
    final = await collect(second.completion)
    assert final.text == "streamed answer" and final.finish_reason == "stop" and final.cached


async def test_a_broken_stream_is_never_stored(kit: Kit) -> None:
    kit.model.enqueue([Script(pieces=["half", " an", " answer"], break_after=2), "whole"])
    first = await kit.ask(QUESTION, stream=True)
    assert first.completion is not None
    with pytest.raises(Exception, match="scripted break"):
        await collect(first.completion)
    second = await kit.ask(QUESTION)
    assert header_value(second) == "miss" and second.completion is not None
    assert second.completion.text == "whole"


async def test_an_inner_stage_rewriting_the_request_does_not_change_where_the_answer_is_stored() -> None:
    class Rewrite:
        name = "route"

        async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
            messages = (*ex.request.messages, ex.request.messages[-1])  # e.g. context added
            return await call_next(dataclasses.replace(ex, request=dataclasses.replace(ex.request, messages=messages)))

    kit = make_kit(inner=[Rewrite()])
    await kit.ask(QUESTION)
    assert header_value(await kit.ask(QUESTION)) == "hit"


class BrokenBackend(MemoryCacheBackend):
    async def get(self, key: str) -> Entry | None:
        raise StoreError("Redis is down.")

    async def put_many(self, entries: Sequence[Entry]) -> None:
        raise StoreError("Redis is down.")


async def test_a_broken_backend_never_breaks_a_request() -> None:
    kit = make_kit(backend=BrokenBackend())
    kit.model.enqueue(["still answered", "again"])
    first = await kit.ask(QUESTION)
    assert first.completion is not None and first.completion.text == "still answered"
    second = await kit.ask(QUESTION)
    assert header_value(second) == "miss" and second.completion is not None


async def test_a_failed_write_is_logged_and_the_answer_still_served(caplog: pytest.LogCaptureFixture) -> None:
    class WritesFail(MemoryCacheBackend):
        async def put_many(self, entries: Sequence[Entry]) -> None:
            raise StoreError("Redis is down.")

    kit = make_kit(backend=WritesFail())
    kit.model.enqueue(["still answered", "again"])
    first = await kit.ask(QUESTION)
    assert first.completion is not None and first.completion.text == "still answered"
    assert "could not store an answer in the cache: Redis is down." in caplog.text
    assert not kit.stage._flights and kit.stage.semantic is not None and not kit.stage.semantic._pending
    second = await kit.ask(QUESTION)  # the index holds the entry, but the backend lacks it: a miss
    assert header_value(second) == "miss" and second.completion is not None and second.completion.text == "again"


async def test_a_miss_writes_its_exact_and_semantic_entry_in_one_backend_call() -> None:
    class Counting(MemoryCacheBackend):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[list[str]] = []

        async def put_many(self, entries: Sequence[Entry]) -> None:
            self.calls.append(sorted(e.kind for e in entries))
            await super().put_many(entries)

    backend = Counting()
    kit = make_kit(backend=backend)
    kit.model.enqueue(["Click 'Forgot password'."])
    await kit.ask(QUESTION)
    assert backend.calls == [["exact", "semantic"]]
    assert header_value(await kit.ask(QUESTION)) == "hit"
    assert header_value(await kit.ask("How do I reset my password")) == "semantic-hit"
    assert len(kit.model.requests) == 1


async def test_exact_and_semantic_caches_on_two_backends_each_get_their_entry() -> None:
    from aiestack.cache.exact import ExactCache

    kit = make_kit()
    exact = MemoryCacheBackend()
    kit.stage.exact = ExactCache(exact)
    kit.model.enqueue(["Click 'Forgot password'."])
    await kit.ask(QUESTION)
    assert [e.kind for e in exact._entries.values()] == ["exact"]
    assert [e.kind for e in kit.backend._entries.values()] == ["semantic"]  # type: ignore[attr-defined]
    assert header_value(await kit.ask(QUESTION)) == "hit"


async def test_metrics_count_lookups_and_the_cost_saved(kit: Kit) -> None:
    kit.model.enqueue(["x"])
    first = await kit.ask(QUESTION)
    await kit.ask(QUESTION)
    text = kit.metrics.render().decode()
    # a bare model's requests are route "none", as in every exchange metric
    assert 'aiestack_cache_lookups_total{kind="exact",result="miss",route="none"} 1.0' in text
    assert 'aiestack_cache_lookups_total{kind="exact",result="hit",route="none"} 1.0' in text
    assert first.completion is not None and first.completion.cost_usd
    saved = f'aiestack_cache_saved_usd_total{{kind="exact",route="none"}} {float(first.completion.cost_usd)}'
    assert saved in text


async def test_the_status_attribute_is_what_the_header_sends(kit: Kit) -> None:
    ex = await kit.ask(QUESTION)
    assert ex.attributes[CACHE_STATUS] == header_value(ex) == "miss"


async def test_a_long_last_turn_is_cached_exactly_but_never_by_meaning() -> None:
    kit = make_kit(policies={MODEL: CachePolicy(semantic_max_chars=60, threshold=0.5)})
    kit.model.enqueue(["A wins", "B wins"])
    template = "Compare the answers and pick the better one. Question: capital of France. Answer A: {} Answer B: {}"
    await kit.ask(template.format("Paris", "Lyon"))
    assert header_value(await kit.ask(template.format("Paris", "Lyon"))) == "hit"
    swapped = await kit.ask(template.format("Lyon", "Paris"))
    assert header_value(swapped) == "miss" and swapped.completion is not None
    assert swapped.completion.text == "B wins"
    assert kit.embeddings.calls == []  # nothing long was embedded


async def test_a_templated_multi_line_prompt_is_never_matched_by_meaning() -> None:
    kit = make_kit(threshold=0.5)
    kit.model.enqueue(["A", "B"])
    template = "Which answer is better?\n[Question]\nw0\n[Answer A]\n{}\n[Answer B]\n{}"
    await kit.ask(template.format("bad w0", "good w0"))
    swapped = await kit.ask(template.format("good w0", "bad w0"))
    assert header_value(swapped) == "miss" and swapped.completion is not None and swapped.completion.text == "B"


async def test_until_the_embedding_model_is_loaded_lookups_are_exact_only() -> None:
    kit = make_kit(threshold=0.7)
    loaded = False
    kit.stage._semantic_ready = lambda: loaded
    kit.model.enqueue(["first", "second", "third"])
    await kit.ask("Is aspirin safe during pregnancy?")
    assert kit.embeddings.calls == []  # nothing embedded, nothing waited for
    assert header_value(await kit.ask("is aspirin safe during a pregnancy")) == "miss"
    loaded = True
    await kit.ask("Is the museum open on Monday?")
    assert header_value(await kit.ask("is the museum open on monday please")) == "semantic-hit"


class _Retrieve:
    """Stands in for the Context stage: the answer is made from two retrieved chunks."""

    name = "context"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        hits = (
            Hit(Chunk(id="c1", document_id="d1", text="Keys are revoked with `aiestack keys revoke`.", metadata={"source": "docs/gateway.md"}), 0.9, "hybrid"),
            Hit(Chunk(id="c2", document_id="d2", text="A revoked key fails with 401.", position=3), 0.4, "hybrid"),
        )
        return await call_next(dataclasses.replace(ex, hits=hits))


@pytest.mark.parametrize("backend", ["memory", "json"])
async def test_a_hit_serves_the_retrieved_chunks_of_the_original_answer(backend: str) -> None:
    kit = make_kit(inner=[_Retrieve()])
    first = await kit.ask(QUESTION)
    if backend == "json":  # what the SQL and Redis backends store: the answer's JSON form
        entries = list(kit.backend._entries.values())  # type: ignore[attr-defined]
        assert entries
        for entry in entries:
            assert CachedAnswer.from_json(entry.answer.to_json()) == entry.answer
    second = await kit.ask(QUESTION)
    assert header_value(second) == "hit" and len(kit.model.requests) == 1
    assert second.hits == first.hits and second.hits[0].chunk.metadata == {"source": "docs/gateway.md"}


async def test_under_a_server_the_answer_is_indexed_and_written_once_the_response_has_left(kit: Kit) -> None:
    from aiestack.cache.stage import CACHE_COALESCED, CACHE_STORED
    from aiestack.stores.cache_memory import MemoryCacheBackend
    from aiestack.tracing import Deferred, deferring, run_deferred

    backend = kit.backend
    assert isinstance(backend, MemoryCacheBackend)
    kit.model.enqueue(["Click 'Forgot password'."])
    later: Deferred = []
    with deferring(later):  # what the server's hot routes do around a handler
        first = await kit.ask(QUESTION)
    assert header_value(first) == "miss" and first.attributes[CACHE_STORED] is True
    assert len(backend) == 0 and not kit.stage._writes  # nothing indexed, serialised or written yet
    semantic = kit.stage.semantic
    assert semantic is not None and not semantic._pending
    # Meanwhile an identical request is answered by the still-open, answered flight, not by the model.
    second = await kit.ask(QUESTION)
    assert header_value(second) == "hit" and second.attributes[CACHE_COALESCED] is True
    assert len(kit.model.requests) == 1
    await run_deferred(later)  # the response has left: index and write
    await kit.stage.settle()
    assert len(backend) == 2 and not kit.stage._flights  # the exact and the semantic entry; the flight closed
    third = await kit.ask(QUESTION)
    assert header_value(third) == "hit" and CACHE_COALESCED not in third.attributes  # from the cache itself
    paraphrase = await kit.ask("How do I reset my password")
    assert header_value(paraphrase) == "semantic-hit" and len(kit.model.requests) == 1


async def test_outside_a_server_the_answer_is_written_at_once(kit: Kit) -> None:
    from aiestack.stores.cache_memory import MemoryCacheBackend

    kit.model.enqueue(["Click 'Forgot password'."])
    await kit.ask(QUESTION)  # ask() settles the background writes, nothing is deferred
    assert isinstance(kit.backend, MemoryCacheBackend) and len(kit.backend) == 2
