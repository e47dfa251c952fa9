"""Implicit feedback: what users' behaviour says about answers (AI Engineering, ch. 10).

The :class:`Signals` stage recognises four signals and records each as feedback with source
``implicit`` (and ``value`` 0: each says the answer did not satisfy):

- ``regenerated``: the same conversation with the same last user message is sent again — the
  user asked for another answer. Recorded on the earlier exchange.
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

Conversations are matched by hashes (:func:`conversation_keys`), salted with tenant, key and
user, so the signals work without content tracing and never cross tenants. After an answer
is complete the stage writes the exchange's :class:`TurnRecord` and looks up earlier turns in a
background task: the response is never delayed by it.
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

from aiestack.pipeline import Next
from aiestack.stores.feedback import FeedbackRecord, FeedbackStore, TurnRecord
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR
from aiestack.types import Completion, Delta, Exchange, Message

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
    messages: Sequence[Message], *, tenant: str, key_id: str | None, user: str | None
) -> ConversationKeys | None:
    """The keys of a request, or ``None`` if it has no user message."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last is None:
        return None
    salt = _digest("who", tenant, key_id or "", user or "")

    def keys_at(index: int) -> tuple[str, str]:
        conversation = _digest(salt, *(_message_key(m) for m in messages[:index]))
        return conversation, _digest(conversation, _message_key(messages[index]))

    conversation, turn = keys_at(last)
    previous_turn = previous_answer = None
    answer = next((i for i in range(last - 1, -1, -1) if messages[i].role == "assistant"), None)
    if answer is not None:
        asked = next((i for i in range(answer - 1, -1, -1) if messages[i].role == "user"), None)
        if asked is not None:
            previous_turn = keys_at(asked)[1]
            previous_answer = answer_hash(messages[answer].text)
    return ConversationKeys(
        conversation, turn, messages[last].text, previous_turn, previous_answer, first_turn=answer is None
    )


def _signal_id(kind: str, target: str, by: str) -> str:
    return "fbi_" + _digest(kind, target, by)


class Signals:
    """Detects implicit feedback (see the module docstring).

    ``window_s``: how far back a regeneration or an edit is matched (default one hour).
    Call :meth:`drain` to wait for the background work (tests, shutdown).
    """

    name = "signals"

    def __init__(
        self,
        store: FeedbackStore,
        *,
        window_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window = window_s
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._observed = 0

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        keys = conversation_keys(ex.request.messages, tenant=ex.tenant, key_id=ex.key_id, user=ex.request.user)
        result = await call_next(ex)
        completion = result.completion
        if keys is None or completion is None or result.outcome not in ("ok", "cached", "pending"):
            return result
        if completion.stream is None:
            self._schedule(self._observe, result, keys, completion.text)
            return result
        return dataclasses.replace(result, completion=self._watch(result, keys, completion))

    async def drain(self) -> None:
        """Wait until every observation scheduled so far has been stored."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)  # let the tasks' done callbacks run

    # ------------------------------------------------------------------ streams

    def _watch(self, ex: Exchange, keys: ConversationKeys, completion: Completion) -> Completion:
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
                    self._schedule(self._stopped, ex, keys, "".join(parts))
                raise
            except Exception:
                raise  # a broken stream is an error, not a user's signal
            else:
                if finished:
                    self._schedule(self._observe, ex, keys, "".join(parts))
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None and not finished:
                    await aclose()

        return dataclasses.replace(completion, stream=watched())

    # ------------------------------------------------------------------ background work

    def _schedule(self, work: Callable[..., None], *args: object) -> None:
        try:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(work, *args))
        except RuntimeError:  # no loop (a stream closed by the garbage collector): do it now
            try:
                work(*args)
            except Exception:
                _log.exception("aiestack could not record implicit feedback")
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("aiestack could not record implicit feedback", exc_info=task.exception())

    def _stopped(self, ex: Exchange, keys: ConversationKeys, partial: str) -> None:
        turn = _turn_of(ex, keys, partial, self._clock())
        self._store.write_feedback([self._signal(ex.id, "stopped_early", ex, turn, {"chars": str(len(partial))})])
        self._observe(ex, keys, partial)

    def _observe(self, ex: Exchange, keys: ConversationKeys, answer: str) -> None:
        now = self._clock()
        since = now - self._window
        signals: list[FeedbackRecord] = []
        earlier = [
            t
            for t in self._store.find_turns(conversation=keys.conversation, since=since, limit=5)
            if t.exchange_id != ex.id
        ]
        same = next((t for t in earlier if t.turn == keys.turn), None)
        if same is not None:
            signals.append(self._signal(same.exchange_id, "regenerated", ex, same, {"by": ex.id}))
        elif earlier and not keys.first_turn:
            # A different first message is as likely a new conversation as an edit: only a resend
            # that keeps the earlier turns (an answer included) and changes the last one is an edit.
            signals.append(self._signal(earlier[0].exchange_id, "edited", ex, earlier[0], {"by": ex.id}))
        phrase = complaint(keys.last_user)
        if phrase is not None and keys.previous_turn is not None:
            previous = self._store.find_turns(turn=keys.previous_turn, since=since, limit=5)
            matching = [t for t in previous if t.answer is None or t.answer == keys.previous_answer]
            if matching:
                signals.append(
                    self._signal(matching[0].exchange_id, "complaint", ex, matching[0], {"by": ex.id, "phrase": phrase})
                )
        if signals:
            self._store.write_feedback(signals)
        self._store.write_turns([_turn_of(ex, keys, answer, now)])
        self._observed += 1
        if self._observed % PRUNE_EVERY == 0:  # turns older than the window can no longer match
            self._store.prune_turns(since)

    def _signal(
        self, target: str, kind: str, by: Exchange, turn: TurnRecord, detail: dict[str, str]
    ) -> FeedbackRecord:
        return FeedbackRecord(
            id=_signal_id(kind, target, by.id),
            exchange_id=target,
            created_at=self._clock(),
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
