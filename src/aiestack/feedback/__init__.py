"""User feedback: explicit judgements, implicit signals from conversations, finetuning exports,
and conversation imports (see docs/feedback.md)."""

from aiestack.feedback.explicit import explicit_feedback, normalised_value, thumbs_value
from aiestack.feedback.export import ExportStats, chat_messages, export_feedback
from aiestack.feedback.imports import (
    ImportStats,
    detect,
    exchanges_from_export,
    import_conversations,
    load_export,
)
from aiestack.feedback.signals import (
    COMPLAINT_PHRASES,
    ConversationKeys,
    Signals,
    complaint,
    conversation_keys,
)

__all__ = [
    "COMPLAINT_PHRASES",
    "ConversationKeys",
    "ExportStats",
    "ImportStats",
    "Signals",
    "chat_messages",
    "complaint",
    "conversation_keys",
    "detect",
    "exchanges_from_export",
    "explicit_feedback",
    "export_feedback",
    "import_conversations",
    "load_export",
    "normalised_value",
    "thumbs_value",
]
