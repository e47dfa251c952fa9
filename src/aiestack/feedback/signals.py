"""Implicit feedback: what users' behaviour says about answers (AI Engineering, ch. 10).

The :class:`Signals` stage recognises four signals and records each as feedback with source
``implicit`` (and ``value`` 0: each says the answer did not satisfy):

- ``regenerated``: the same conversation with the same last user message is sent again, to the
  same route (or model), by the same user, and gets a *new* answer — the user asked for another
  answer. Recorded on the earlier exchange. An answer from the cache is never one (nothing was
  regenerated), nor is the same answer again (a client's retry).
- ``edited``: the same conversation (with at least one earlier answer in it) is sent again with a
  *different* last user message — the user edited their question and resent it. Recorded on the
  earlier exchange. (A different *first* message is not counted: it is as likely a new
  conversation as an edit.)
- ``stopped_early``: the client stopped reading a streamed answer before its end (it
  disconnected or pressed stop; the server closes the stream, which this stage notices).
  Recorded on this exchange.
- ``complaint``: the new user message is a short "that's wrong"-style follow-up (a small
  multilingual phrase list, :data:`COMPLAINT_PHRASES`) to the previous answer. Recorded on the
  exchange that gave that answer.

Conversations are matched by hashes (:func:`conversation_keys`), salted with who asks (tenant,
key, the request's ``user``, and the client, :data:`CLIENT_ATTR`, which the server sets from the
caller's address) and the route or model asked, so the signals work without content tracing,
never cross tenants, clients or models. After an answer
is complete the stage queues it; one background thread matches the queued answers against earlier
turns and writes their :class:`TurnRecord` and signals in batches, so the response is never
delayed by it and the store sees a few queries and two writes per batch, not per answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiestack.errors import StoreError
from aiestack.pipeline import Next
from aiestack.stores.feedback import FeedbackRecord, FeedbackStore, TurnRecord
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR
from aiestack.stores.writer import BatchQueue
from aiestack.types import Completion, Delta, Exchange, Message, last_user_index

_log = logging.getLogger(__name__)

#: Short follow-ups that say the previous answer was wrong, in several languages (matched after
#: case folding, with curly apostrophes straightened and punctuation dropped).
COMPLAINT_PHRASES: tuple[str, ...] = (
    # English
    "that's wrong", "that is wrong", "thats wrong", "that's not right", "that is not right",
    "that's incorrect", "that is incorrect", "that's not correct", "that is not correct",
    "wrong answer", "you're wrong", "you are wrong", "not what i asked", "that's not what i asked",
    "this is wrong", "no that's wrong", "incorrect", "that doesn't work", "that does not work",
    # German
    "das ist falsch", "das stimmt nicht", "falsche antwort", "stimmt nicht",
    # French
    "c'est faux", "c'est pas correct", "ce n'est pas correct", "c'est incorrect", "mauvaise réponse",
    # Spanish
    "eso está mal", "está mal", "es incorrecto", "eso no es correcto", "respuesta incorrecta",
    # Italian
    "è sbagliato", "non è corretto", "risposta sbagliata",
    # Portuguese
    "está errado", "isso está errado", "resposta errada", "não está certo",
    # Dutch
    "dat klopt niet", "dat is fout", "dat is niet juist",
    # Russian
    "неправильно", "это не так", "это неверно",
    # Chinese, Japanese
    "不对", "错了", "不正确", "違います", "間違って",
)

#: Exchange attribute naming the client (a hash of its address, set by the server): without an API
#: key or a ``user``, it is what tells two callers apart.
CLIENT_ATTR = "aiestack.client"

#: Every this many observations, turns older than the window are deleted.
PRUNE_EVERY = 1000

#: Follow-ups longer than this are new questions, not complaints (fewer false positives).
MAX_COMPLAINT_CHARS = 160


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).casefold().replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"[!?.,;:…。！？、]+", " ", text)
    return " ".join(text.split())


_PHRASES = tuple(sorted({_normalise(p) for p in COMPLAINT_PHRASES}, key=len, reverse=True))


def complaint(text: str) -> str | None:
    """The complaint phrase ``text`` contains (``None`` if none, or if it is too long to be one)."""
    if not text or len(text) > MAX_COMPLAINT_CHARS:
        return None
    normalised = f" {_normalise(text)} "
    for phrase in _PHRASES:
        if phrase.isascii():
            if f" {phrase} " in normalised:
                return phrase
        elif phrase in normalised:  # scripts without spaces between words
            return phrase
    return None


@dataclass(frozen=True, slots=True)
class ConversationKeys:
    """The hashes of one request: see :class:`~aiestack.stores.feedback.TurnRecord`.

    ``previous_turn`` is the turn of the exchange that gave the last assistant answer in the
    request (``None`` when there is none); ``previous_answer`` the hash of that answer.
    ``first_turn``: no assistant message precedes the last user message (a new conversation).
    """

    conversation: str
    turn: str
    last_user: str
    previous_turn: str | None = None
    previous_answer: str | None = None
    first_turn: bool = True


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _message_key(message: Message) -> str:
    calls = [[c.name, c.arguments] for c in message.tool_calls]
    return json.dumps([message.role, message.text, calls], ensure_ascii=False, separators=(",", ":"))


def answer_hash(text: str) -> str:
    return _digest("answer", text.strip())


def conversation_keys(
    messages: Sequence[Message],
    *,
    tenant: str,
    key_id: str | None,
    user: str | None,
    route: str = "",
    client: str | None = None,
) -> ConversationKeys | None:
    """The keys of a request, or ``None`` if it has no user message.

    A conversation belongs to one caller (tenant, key, user, client) and one route or model.
    """
    last = last_user_index(messages)
    if last is None:
        return None
    salt = _digest("who", tenant, key_id or "", user or "", client or "", "route", route)

    def keys_at(index: int) -> tuple[str, str]:
        conversation = _digest(salt, *(_message_key(m) for m in messages[:index]))
        return conversation, _digest(conversation, _message_key(messages[index]))

    conversation, turn = keys_at(last)
    previous_turn = previous_answer = None
    answer = next((i for i in range(last - 1, -1, -1) if messages[i].role == "assistant"), None)
    if answer is not None:
        asked = last_user_index(messages, before=answer)
        if asked is not None:
            previous_turn = keys_at(asked)[1]
            previous_answer = answer_hash(messages[answer].text)
    return ConversationKeys(
        conversation, turn, messages[last].text, previous_turn, previous_answer, first_turn=answer is None
    )


def _signal_id(kind: str, target: str, by: str) -> str:
    return "fbi_" + _digest(kind, target, by)


@dataclass(frozen=True, slots=True)
class _Observation:
    """One answered (or stopped) exchange, waiting for the background thread.

    ``asked`` is the exchange as it entered the stage (its messages are the client's, before any
    inner stage rewrote them: the conversation keys come from them); ``answered`` is the exchange
    that left it (its route and prompt attributes are recorded). ``at`` is when the answer ended.
    """

    asked: Exchange
    answered: Exchange
    answer: str
    at: float
    stopped: bool = False


#: Earlier turns an answer is matched against (the newest first).
_MATCHED = 5


class _Turns:
    """The earlier turns a batch is matched against: the store's (one query per hash), then the batch's own."""

    def __init__(self, store: FeedbackStore, since: float) -> None:
        self._store = store
        self._since = since
        self._stored: dict[tuple[str, str], list[TurnRecord]] = {}
        self._new: dict[tuple[str, str], list[TurnRecord]] = {}

    def of(self, *, conversation: str | None = None, turn: str | None = None) -> list[TurnRecord]:
        """Newest first: the last few turns of this batch, then up to five stored ones."""
        key = ("c", conversation) if conversation is not None else ("t", turn or "")
        stored = self._stored.get(key)
        if stored is None:
            stored = self._store.find_turns(conversation=conversation, turn=turn, since=self._since, limit=_MATCHED)
            self._stored[key] = stored
        new = self._new.get(key, [])
        return [*new[-_MATCHED:][::-1], *stored]

    def add(self, turn: TurnRecord) -> None:
        self._new.setdefault(("c", turn.conversation), []).append(turn)
        self._new.setdefault(("t", turn.turn), []).append(turn)


class Signals:
    """Detects implicit feedback (see the module docstring).

    ``window_s``: how far back a regeneration or an edit is matched (default one hour).
    The matching and the writes happen on one background thread, in batches (the store writer's
    :class:`~aiestack.stores.writer.BatchQueue`, with its retries): per batch, one query per distinct
    conversation and two writes, however many answers it holds. ``batch_size``,
    ``flush_interval_s`` and ``max_queue`` tune that queue. Call :meth:`drain` to wait for the
    background work (tests), :meth:`aclose` to finish it and stop the thread (shutdown).
    """

    name = "signals"

    def __init__(
        self,
        store: FeedbackStore,
        *,
        window_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        batch_size: int = 256,
        flush_interval_s: float = 0.25,
        max_queue: int = 10_000,
    ) -> None:
        self._store = store
        self._window = window_s
        self._clock = clock
        self._observed = 0
        self._queue: BatchQueue[_Observation] = BatchQueue(
            self._handle,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            max_queue=max_queue,
            name="aiestack-feedback-signals",
            what="implicit feedback observations",
            describe=lambda obs: f"the implicit feedback on exchange {obs.answered.id}",
        )

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        result = await call_next(ex)
        completion = result.completion
        if completion is None or result.outcome not in ("ok", "cached", "pending"):
            return result
        if completion.stream is None:
            self._schedule(_Observation(ex, result, completion.text, self._clock()))
            return result
        return dataclasses.replace(result, completion=self._watch(ex, result, completion))

    @property
    def pending(self) -> int:
        """Observations not yet stored."""
        return self._queue.pending

    async def drain(self) -> None:
        """Wait until every observation made so far has been stored."""
        if self._queue.pending:
            await asyncio.to_thread(self._queue.flush)

    async def aclose(self) -> None:
        """Store every observation made so far and stop the background thread. Idempotent."""
        if not self._queue.closed:
            await asyncio.to_thread(self._queue.close)

    # ------------------------------------------------------------------ streams

    def _watch(self, asked: Exchange, ex: Exchange, completion: Completion) -> Completion:
        source = completion.stream
        assert source is not None

        async def watched() -> AsyncIterator[Delta]:
            parts: list[str] = []
            finished = False
            try:
                async for delta in source:
                    parts.append(delta.text)
                    finished = finished or delta.finish_reason is not None
                    yield delta
            except (GeneratorExit, asyncio.CancelledError):
                if not finished:
                    self._schedule(_Observation(asked, ex, "".join(parts), self._clock(), stopped=True))
                raise
            except Exception:
                raise  # a broken stream is an error, not a user's signal
            else:
                if finished:
                    self._schedule(_Observation(asked, ex, "".join(parts), self._clock()))
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None and not finished:
                    await aclose()

        return dataclasses.replace(completion, stream=watched())

    # ------------------------------------------------------------------ background work

    def _schedule(self, observation: _Observation) -> None:
        """Queue the observation; after :meth:`aclose` (a stream that ends later) handle it now."""
        if not self._queue.closed:
            try:
                self._queue.submit(observation)
                return
            except StoreError:  # closed in between
                pass
        try:
            self._handle([observation])
        except Exception:
            _log.exception("aiestack could not record implicit feedback")

    def _handle(self, batch: Sequence[_Observation]) -> None:
        """Match a batch of observations against earlier turns (and each other, in order), then store
        the signals and the turns: one query per distinct conversation, one write of each kind."""
        keyed: list[tuple[_Observation, ConversationKeys]] = []
        for obs in batch:
            asked = obs.asked
            client = asked.attributes.get(CLIENT_ATTR)
            keys = conversation_keys(
                asked.request.messages,
                tenant=asked.tenant,
                key_id=asked.key_id,
                user=asked.request.user,
                route=asked.request.model,
                client=client if isinstance(client, str) else None,
            )
            if keys is not None:
                keyed.append((obs, keys))
        if not keyed:
            return
        turns = _Turns(self._store, since=min(obs.at for obs, _ in keyed) - self._window)
        signals: list[FeedbackRecord] = []
        written: list[TurnRecord] = []
        for obs, keys in keyed:
            signals += self._match(obs, keys, turns)
            turn = _turn_of(obs.answered, keys, obs.answer, obs.at)
            turns.add(turn)
            written.append(turn)
        if signals:
            self._store.write_feedback(signals)
        self._store.write_turns(written)
        before, self._observed = self._observed, self._observed + len(keyed)
        if self._observed // PRUNE_EVERY > before // PRUNE_EVERY:  # turns older than the window can no longer match
            self._store.prune_turns(max(obs.at for obs, _ in keyed) - self._window)

    def _match(self, obs: _Observation, keys: ConversationKeys, turns: _Turns) -> list[FeedbackRecord]:
        """The signals one observation gives, against the turns before it."""
        ex, since = obs.answered, obs.at - self._window
        signals: list[FeedbackRecord] = []
        if obs.stopped:
            turn = _turn_of(ex, keys, obs.answer, obs.at)
            signals.append(self._signal(ex.id, "stopped_early", ex, turn, {"chars": str(len(obs.answer))}, obs.at))
        earlier = [
            t for t in turns.of(conversation=keys.conversation) if t.exchange_id != ex.id and t.created_at >= since
        ][:_MATCHED]
        same = next((t for t in earlier if t.turn == keys.turn), None)
        if same is not None:
            # A new answer to the same turn; a cache hit or the same answer again regenerated nothing.
            fresh = ex.outcome != "cached" and same.answer != answer_hash(obs.answer)
            if fresh:
                signals.append(self._signal(same.exchange_id, "regenerated", ex, same, {"by": ex.id}, obs.at))
        elif earlier and not keys.first_turn:
            # A different first message is as likely a new conversation as an edit: only a resend
            # that keeps the earlier turns (an answer included) and changes the last one is an edit.
            signals.append(self._signal(earlier[0].exchange_id, "edited", ex, earlier[0], {"by": ex.id}, obs.at))
        # Only a follow-up to an earlier answer can complain about it: a first turn skips the phrase search.
        phrase = complaint(keys.last_user) if keys.previous_turn is not None else None
        if phrase is not None and keys.previous_turn is not None:
            previous = [t for t in turns.of(turn=keys.previous_turn) if t.created_at >= since][:_MATCHED]
            matching = [t for t in previous if t.answer is None or t.answer == keys.previous_answer]
            if matching:
                signals.append(
                    self._signal(
                        matching[0].exchange_id, "complaint", ex, matching[0], {"by": ex.id, "phrase": phrase}, obs.at
                    )
                )
        return signals

    def _signal(
        self, target: str, kind: str, by: Exchange, turn: TurnRecord, detail: dict[str, str], at: float
    ) -> FeedbackRecord:
        return FeedbackRecord(
            id=_signal_id(kind, target, by.id),
            exchange_id=target,
            created_at=at,
            kind=kind,
            source="implicit",
            tenant=by.tenant,
            key_id=by.key_id,
            user=by.request.user,
            route=turn.route,
            prompt=turn.prompt,
            prompt_version=turn.prompt_version,
            value=0.0,
            detail=detail,
        )


def _turn_of(ex: Exchange, keys: ConversationKeys, answer: str | None, at: float) -> TurnRecord:
    version = ex.attributes.get(PROMPT_VERSION_ATTR)
    return TurnRecord(
        exchange_id=ex.id,
        conversation=keys.conversation,
        turn=keys.turn,
        created_at=at,
        tenant=ex.tenant,
        route=ex.route,
        prompt=ex.attributes.get(PROMPT_NAME_ATTR),
        prompt_version=version if isinstance(version, int) else None,
        answer=answer_hash(answer) if answer else None,
    )
