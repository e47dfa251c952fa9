"""User feedback, conversation turns (for implicit signals) and versioned prompts with labels.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_FEEDBACK_INDEXES = {
    "ix_feedback_created_at": ["created_at"],
    "ix_feedback_exchange_id": ["exchange_id"],
    "ix_feedback_tenant_created_at": ["tenant", "created_at"],
    "ix_feedback_route_created_at": ["route", "created_at"],
    "ix_feedback_prompt_prompt_version_created_at": ["prompt", "prompt_version", "created_at"],
}
_TURN_INDEXES = {
    "ix_conversation_turns_conversation_created_at": ["conversation", "created_at"],
    "ix_conversation_turns_turn_created_at": ["turn", "created_at"],
}


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("exchange_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("user", sa.String(), nullable=True),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("prompt", sa.String(), nullable=True),
        sa.Column("prompt_version", sa.Integer(), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("thumbs", sa.Integer(), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    for name, columns in _FEEDBACK_INDEXES.items():
        op.create_index(name, "feedback", columns)
    op.create_table(
        "conversation_turns",
        sa.Column("exchange_id", sa.String(), nullable=False),
        sa.Column("conversation", sa.String(), nullable=False),
        sa.Column("turn", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("prompt", sa.String(), nullable=True),
        sa.Column("prompt_version", sa.Integer(), nullable=True),
        sa.Column("answer", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("exchange_id", name="pk_conversation_turns"),
    )
    for name, columns in _TURN_INDEXES.items():
        op.create_index(name, "conversation_turns", columns)
    op.create_table(
        "prompt_versions",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("variables", JSON, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_prompt_versions"),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", "label", name="pk_prompt_labels"),
    )


def downgrade() -> None:
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
    for name in reversed(_TURN_INDEXES):
        op.drop_index(name, table_name="conversation_turns")
    op.drop_table("conversation_turns")
    for name in reversed(_FEEDBACK_INDEXES):
        op.drop_index(name, table_name="feedback")
    op.drop_table("feedback")
