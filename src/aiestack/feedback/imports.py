"""Import a ChatGPT or Claude data export as exchanges (``aiestack import-conversations FILE``).

Each assistant turn becomes one :class:`~aiestack.stores.base.ExchangeRecord`: model
``import:chatgpt`` or ``import:claude``, ``created_at`` from the export, the conversation so far as
its request messages and the answer as its response (the same shapes content tracing stores), so
the console's usage heatmap, the exchange list and the eval datasets can use them.

Ids are derived from the export (source, conversation id, message id), so importing the same
file again rewrites the same records: re-importing is idempotent, and importing a newer export
adds only what is new.

Formats:

- **ChatGPT** ``conversations.json``: a list of conversations, each with a ``mapping`` tree of
  nodes (``message.author.role``, ``message.content.parts``, ``message.create_time``,
  ``parent``) and ``current_node``. The branch shown in ChatGPT (from ``current_node`` up to the
  root) is imported; hidden and empty messages are skipped.
- **Claude** ``conversations.json``: a list of conversations with ``chat_messages`` (``sender``
  ``human``/``assistant``, ``text`` or ``content`` text parts, ``created_at`` ISO 8601).

The file may also be the export's ``.zip``; its ``conversations.json`` is read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from aiestack.errors import InvalidRequest
from aiestack.stores.base import ExchangeRecord

Source = Literal["chatgpt", "claude"]

IMPORT_SOURCE_ATTR = "aiestack.import.source"
IMPORT_CONVERSATION_ATTR = "aiestack.import.conversation"
IMPORT_TITLE_ATTR = "aiestack.import.title"
IMPORT_MODEL_ATTR = "aiestack.import.model"


class _Writer(Protocol):
    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None: ...

    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None: ...


@dataclass(frozen=True, slots=True)
class _Turn:
    id: str
    role: str
    text: str
    created_at: float | None
    model: str | None = None


@dataclass
class ImportStats:
    source: str
    conversations: int = 0
    exchanges: int = 0  #: read from the export
    new: int = 0  #: of those, not in the store before (the others were imported earlier and stay as they are)
    skipped_conversations: int = 0
    first: float | None = None
    last: float | None = None


def load_export(path: Path) -> Any:
    """The parsed ``conversations.json`` from a JSON file or an export ``.zip``."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "conversations.json"]
                if not names:
                    raise InvalidRequest(
                        f"{path} is a zip file without a conversations.json.",
                        hint="Pass the export's conversations.json, or the export zip as downloaded.",
                    )
                return json.loads(archive.read(names[0]))
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"Cannot read {path}: {exc}.", hint="Pass the conversations.json of a ChatGPT or Claude export.") from None


def detect(data: Any) -> Source:
    """Which export ``data`` is; :class:`InvalidRequest` if neither."""
    if isinstance(data, list):
        for conversation in data[:20]:
            if isinstance(conversation, Mapping):
                if "mapping" in conversation:
                    return "chatgpt"
                if "chat_messages" in conversation:
                    return "claude"
    raise InvalidRequest(
        "This is neither a ChatGPT nor a Claude conversations.json.",
        hint="ChatGPT: Settings → Data controls → Export; Claude: Settings → Privacy → Export data. "
        "Pass the conversations.json (or the zip) it sends you.",
    )


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    return None


def _chatgpt_turns(conversation: Mapping[str, Any]) -> list[_Turn]:
    mapping = conversation.get("mapping")
    if not isinstance(mapping, Mapping) or not mapping:
        return []
    node_id = conversation.get("current_node")
    if node_id not in mapping:  # no current node: follow the newest leaf
        leaves = [n for n in mapping.values() if isinstance(n, Mapping) and not n.get("children")]
        node_id = max(leaves, key=lambda n: _epoch((n.get("message") or {}).get("create_time")) or 0).get("id") if leaves else None
    path: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = mapping[node_id]
        path.append(node)
        node_id = node.get("parent")
    turns: list[_Turn] = []
    for node in reversed(path):
        message = node.get("message")
        if not isinstance(message, Mapping):
            continue
        role = (message.get("author") or {}).get("role")
        metadata = message.get("metadata") or {}
        if role not in ("user", "assistant", "system") or metadata.get("is_visually_hidden_from_conversation"):
            continue
        content = message.get("content") or {}
        parts = content.get("parts") if isinstance(content, Mapping) else None
        if isinstance(parts, list):
            text = "\n".join(p for p in parts if isinstance(p, str))
        else:
            text = str(content.get("text", "")) if isinstance(content, Mapping) else ""
        if not text.strip():
            continue
        turns.append(
            _Turn(
                id=str(message.get("id") or node.get("id")),
                role=str(role),
                text=text,
                created_at=_epoch(message.get("create_time")),
                model=metadata.get("model_slug"),
            )
        )
    return turns


def _claude_turns(conversation: Mapping[str, Any]) -> list[_Turn]:
    turns: list[_Turn] = []
    for i, message in enumerate(conversation.get("chat_messages") or ()):
        if not isinstance(message, Mapping):
            continue
        role = {"human": "user", "assistant": "assistant"}.get(str(message.get("sender")))
        if role is None:
            continue
        text = message.get("text") or ""
        if not text and isinstance(message.get("content"), list):
            text = "\n".join(
                str(p.get("text", "")) for p in message["content"] if isinstance(p, Mapping) and p.get("type") == "text"
            )
        if not str(text).strip():
            continue
        turns.append(_Turn(id=str(message.get("uuid") or i), role=role, text=str(text), created_at=_epoch(message.get("created_at"))))
    return turns


def exchanges_from_export(
    data: Any, *, source: Source, tenant: str = "default", redact: Callable[[str], str] | None = None
) -> Iterator[ExchangeRecord]:
    """One exchange per assistant turn of every conversation in ``data``.

    ``redact`` (the stack's trace redactor) masks PII and secrets in every turn and title before it
    is stored, as content tracing masks the exchanges the gateway answers."""
    mask = redact or (lambda text: text)
    for conversation in data:
        if not isinstance(conversation, Mapping):
            continue
        conversation_id = str(conversation.get("conversation_id") or conversation.get("id") or conversation.get("uuid") or "")
        title = mask(str(conversation.get("title") or conversation.get("name") or ""))
        started = _epoch(conversation.get("create_time") or conversation.get("created_at"))
        turns = _chatgpt_turns(conversation) if source == "chatgpt" else _claude_turns(conversation)
        history: list[dict[str, Any]] = []
        for turn in turns:
            text = mask(turn.text)
            if turn.role == "assistant" and history:
                created = turn.created_at or started or 0.0
                attributes: dict[str, Any] = {
                    IMPORT_SOURCE_ATTR: source,
                    IMPORT_CONVERSATION_ATTR: conversation_id,
                    IMPORT_TITLE_ATTR: title,
                }
                if turn.model:
                    attributes[IMPORT_MODEL_ATTR] = turn.model
                yield ExchangeRecord(
                    id="imp_" + hashlib.sha256(f"{source}\x00{conversation_id}\x00{turn.id}".encode()).hexdigest()[:32],
                    created_at=created,
                    model=f"import:{source}",
                    outcome="ok",
                    tenant=tenant,
                    provider="import",
                    finish_reason="stop",
                    request={"model": f"import:{source}", "params": {}, "stream": False, "messages": list(history)},
                    response=text,
                    attributes=attributes,
                )
            history.append({"role": turn.role, "parts": [{"type": "text", "content": text}]})


def import_conversations(
    store: _Writer,
    path: Path,
    *,
    tenant: str = "default",
    source: Source | None = None,
    batch: int = 500,
    redact: Callable[[str], str] | None = None,
) -> ImportStats:
    """Read the export at ``path`` and write its exchanges to ``store`` (idempotently), masked by ``redact``."""
    data = load_export(path)
    kind = source or detect(data)
    stats = ImportStats(source=kind)
    pending: list[ExchangeRecord] = []
    conversations: set[str] = set()
    for record in exchanges_from_export(data, source=kind, tenant=tenant, redact=redact):
        conversations.add(str(record.attributes.get(IMPORT_CONVERSATION_ATTR)))
        stats.exchanges += 1
        stats.new += store.get_exchange(record.id) is None
        stats.first = record.created_at if stats.first is None else min(stats.first, record.created_at)
        stats.last = record.created_at if stats.last is None else max(stats.last, record.created_at)
        pending.append(record)
        if len(pending) >= batch:
            store.write_exchanges(pending)
            pending = []
    if pending:
        store.write_exchanges(pending)
    stats.conversations = len(conversations)
    stats.skipped_conversations = sum(1 for c in data if isinstance(c, Mapping)) - stats.conversations
    return stats
