"""The Context stage in a pipeline with Generate and the fake model: RAG routes, tenancy, the hook."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aiestack.context.config import RagRoute, build_rag_routes
from aiestack.context.stage import COLLECTION_METADATA, RAG_COLLECTION, RAG_DROPPED, RAG_HITS, Context
from aiestack.errors import NotFound, PermissionDenied
from aiestack.gateway.generate import Generate
from aiestack.gateway.routes import build_route_table, route_plans
from aiestack.models.fake import FakeModel
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Pipeline
from aiestack.resources import Resources
from aiestack.streams import collect
from aiestack.types import ChatRequest, Exchange, Finding, Hit, Message, Params, Verdict

from ._rag_kit import BowEmbeddings, memory_store

pytestmark = pytest.mark.unit


class Rig:
    def __init__(self, *, tenant: str = "acme", check_context: object = None, rag: dict[str, object] | None = None):
        self.store = memory_store("kb", tenant=tenant)
        self.fake = FakeModel()
        self.embeddings = BowEmbeddings()
        registry = ModelRegistry([ModelEntry("fake", self.fake, "fake")])
        table = {
            "docs": {"deployments": ["fake"], "collection": "kb", "rag": rag or {"k": 2}},
            "plain": {"deployments": ["fake"]},
        }
        routes = build_route_table(table, registry)
        rag = build_rag_routes({n: routes.config(n) for n in routes}, registry)
        self.plans = route_plans(routes).with_part(RagRoute, None, rag)
        resources = Resources(embeddings=lambda: self.embeddings, documents=lambda: self.store)
        self.stage = Context(resources, check_context=check_context)  # type: ignore[arg-type]
        self.pipeline = Pipeline([self.stage, Generate(registry, PriceTable(), routes=routes)], plans=self.plans)

    async def ask(self, question: str, *, model: str = "docs", tenant: str = "acme", **request: object) -> Exchange:
        req = ChatRequest(model=model, messages=(Message("user", question),), **request)  # type: ignore[arg-type]
        return await self.pipeline(Exchange(request=req, tenant=tenant))


async def test_a_rag_route_retrieves_prompts_with_numbered_sources_and_keeps_the_hits() -> None:
    rig = Rig(rag={"k": 2, "fallback": "off"})  # the echoed prompt is not an answer: no extractive part here
    ex = await rig.ask("why do cats purr")
    assert len(ex.hits) == 2
    assert {h.chunk.metadata["source"] for h in ex.hits} == {"docs/cats.md", "docs/cats2.md"}
    sent = rig.fake.requests[0]
    prompt = sent.messages[-1].text
    assert "[1] " in prompt and "[2] " in prompt and "[3] " not in prompt
    assert ex.hits[0].chunk.text in prompt and prompt.index(ex.hits[0].chunk.text) < prompt.index(ex.hits[1].chunk.text)
    assert "Question: why do cats purr" in prompt
    # where a base model would go on to a next question, or invent source [3] after its answer
    assert sent.params.stop == ("\nQuestion:", "\nSources:", "\nExample:", "\n[3]")
    # the exchange that comes back carries the request as the client sent it, and the hits
    assert ex.request.messages == (Message("user", "why do cats purr"),)
    assert ex.completion is not None and ex.completion.text == prompt  # the fake echoes its prompt
    assert ex.attributes[RAG_COLLECTION] == "kb"
    assert [h["chunk_id"] for h in ex.attributes[RAG_HITS]] == [h.chunk.id for h in ex.hits]
    assert "total_ms" in ex.attributes["aiestack.rag.timings"]


async def test_history_and_own_stop_sequences_are_kept() -> None:
    rig = Rig()
    req = ChatRequest(
        model="docs",
        messages=(Message("system", "be brief"), Message("user", "hi"), Message("assistant", "hello"),
                  Message("user", "tea temperature")),
        params=Params(stop=("END",)),
    )
    await rig.pipeline(Exchange(request=req, tenant="acme"))
    sent = rig.fake.requests[0]
    assert sent.messages[:3] == req.messages[:3]
    assert "Question: tea temperature" in sent.messages[3].text and "80 degrees" in sent.messages[3].text
    assert sent.params.stop == ("END",)


async def test_other_routes_pass_untouched() -> None:
    rig = Rig()
    ex = await rig.ask("why do cats purr", model="plain")
    assert rig.fake.requests[0].messages == (Message("user", "why do cats purr"),)
    assert ex.hits == () and RAG_HITS not in ex.attributes


async def test_a_tenant_sees_only_its_collections_and_the_admin_sees_all() -> None:
    rig = Rig(tenant="acme")
    with pytest.raises(PermissionDenied, match="another tenant"):
        await rig.ask("why do cats purr", tenant="globex")
    assert rig.fake.requests == []  # nothing reached the model
    assert len((await rig.ask("why do cats purr", tenant="acme")).hits) == 2
    assert len((await rig.ask("why do cats purr", tenant="admin")).hits) == 2


async def test_a_missing_collection_says_how_to_create_it() -> None:
    rig = Rig()
    rig.store.drop_collection("kb")
    with pytest.raises(NotFound) as info:
        await rig.ask("cats")
    assert "aiestack ingest" in (info.value.hint or "")


async def test_check_context_can_drop_hits_and_add_verdicts() -> None:
    seen: list[int] = []

    async def check(ex: Exchange, hits: Sequence[Hit]) -> tuple[Sequence[Hit], Sequence[Verdict]]:
        seen.append(len(hits))
        kept = [h for h in hits if "sixteen" not in h.chunk.text]
        return kept, [Verdict("context_injection", "flag", (Finding("injection", label="chunk"),))]

    rig = Rig(check_context=check)
    ex = await rig.ask("why do cats purr")
    assert seen == [2]
    assert len(ex.hits) == 1 and "sixteen" not in ex.hits[0].chunk.text
    assert ex.verdicts[-1].guard == "context_injection"
    assert ex.attributes[RAG_DROPPED] == 1
    prompt = rig.fake.requests[0].messages[-1].text
    assert "sixteen" not in prompt and "[2] " not in prompt


async def test_a_request_may_name_a_collection_in_its_metadata() -> None:
    rig = Rig()
    ex = await rig.ask("green tea", model="fake", metadata={COLLECTION_METADATA: "kb"})
    assert ex.hits and ex.hits[0].chunk.metadata["source"] == "docs/tea.md"
    with pytest.raises(PermissionDenied):
        await rig.ask("green tea", model="fake", tenant="globex", metadata={COLLECTION_METADATA: "kb"})


async def test_streaming_rag_answer() -> None:
    rig = Rig(rag={"k": 1, "mode": "bm25", "template": "{{ sources[0].text }} [1]"})
    ex = await rig.ask("green tea", stream=True)
    assert ex.completion is not None and ex.completion.stream is not None
    final = await collect(ex.completion)
    assert final.text.endswith("[1]") and "80 degrees" in final.text
    assert rig.embeddings.calls == []  # bm25 mode never embeds


async def test_no_user_turn_passes_through() -> None:
    rig = Rig()
    req = ChatRequest(model="docs", messages=(Message("system", "only a system message"),))
    ex = await rig.pipeline(Exchange(request=req, tenant="acme"))
    assert ex.hits == () and rig.fake.requests[0].messages == req.messages


def test_plan_prefers_the_route_over_metadata() -> None:
    rig = Rig()
    ex = Exchange(
        request=ChatRequest(model="docs", messages=(), metadata={COLLECTION_METADATA: "other"}),
        plan=rig.plans.for_name("docs"),
    )
    plan = rig.stage.rag(ex)
    assert plan is not None and plan.collection == "kb"
    bare = Exchange(request=ChatRequest(model="fake", messages=()), plan=rig.plans.for_name("fake"))
    assert rig.stage.rag(bare) is None


@pytest.mark.parametrize("stream", [False, True])
async def test_an_empty_answer_gets_the_labelled_extractive_answer(stream: bool) -> None:
    from aiestack.context.extractive import LABEL, RAG_EXTRACTIVE

    rig = Rig()
    rig.fake.enqueue([""])
    ex = await rig.ask("why do cats purr", stream=stream)
    assert ex.completion is not None
    completion = await collect(ex.completion)
    assert completion.text.startswith(LABEL + "\n")
    quoted = completion.text.splitlines()[1:]
    assert quoted and all(line.endswith(("[1]", "[2]")) for line in quoted)
    assert ex.attributes.get(RAG_EXTRACTIVE) is (None if stream else True)


async def test_fallback_off_leaves_an_empty_answer_empty() -> None:
    rig = Rig(rag={"k": 2, "fallback": "off"})
    rig.fake.enqueue([""])
    ex = await rig.ask("why do cats purr")
    assert ex.completion is not None and ex.completion.text == ""
