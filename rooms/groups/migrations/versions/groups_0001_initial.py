"""Group chats: groups, members, messages, invites.

Revision ID: groups_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "groups_0001"
down_revision = None
branch_labels = ("groups",)
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_groups",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("epoch", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("muted_all", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", BigId, sa.ForeignKey("chat_groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("read_seq", sa.BigInteger(), nullable=False),
        sa.Column("muted_until", sa.Float(), nullable=True),
        sa.Column("joined_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_group_members_user", "group_members", ["user_id"])
    op.create_table(
        "group_messages",
        sa.Column("group_id", BigId, sa.ForeignKey("chat_groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("sender_id", sa.String(128), nullable=False),
        sa.Column("sender_name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("ref", sa.JSON(), nullable=True),
        sa.Column("client_msg_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("recalled_seq", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("group_id", "client_msg_id", "sender_id", name="uq_group_messages_client_id"),
    )
    op.create_table(
        "group_invites",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("group_id", BigId, sa.ForeignKey("chat_groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("group_invites")
    op.drop_table("group_messages")
    op.drop_index("ix_group_members_user", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("chat_groups")
