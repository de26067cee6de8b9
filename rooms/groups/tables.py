"""The group-chat tables as SQLAlchemy Core objects (the migration creates them).

Times are UNIX seconds (floats) so both SQLite and PostgreSQL store them alike.
"""

from __future__ import annotations

import sqlalchemy as sa

#: 64-bit ids on PostgreSQL; SQLite only auto-increments a plain INTEGER primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

groups = sa.Table(
    "chat_groups",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("owner_id", sa.String(128), nullable=False),
    #: Stable per group: the ``epoch`` of its stream positions.
    sa.Column("epoch", sa.String(16), nullable=False),
    #: Highest seq handed out; bumped in the same transaction as the message insert.
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.Column("member_count", sa.Integer(), nullable=False),
    sa.Column("muted_all", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
)

members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", BigId, sa.ForeignKey("chat_groups.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(8), nullable=False),
    #: Every seq up to here counts as read: unread = chat_groups.last_seq - read_seq.
    sa.Column("read_seq", sa.BigInteger(), nullable=False),
    sa.Column("muted_until", sa.Float(), nullable=True),
    sa.Column("joined_at", sa.Float(), nullable=False),
    sa.Index("ix_group_members_user", "user_id"),
)

messages = sa.Table(
    "group_messages",
    metadata,
    sa.Column("group_id", BigId, sa.ForeignKey("chat_groups.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger(), primary_key=True),
    sa.Column("sender_id", sa.String(128), nullable=False),
    sa.Column("sender_name", sa.String(64), nullable=False),
    #: text | room_card | sale_card | announcement | recall
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("ref", sa.JSON(), nullable=True),
    sa.Column("client_msg_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    #: Seq of the tombstone that recalled this message; its text is erased then.
    sa.Column("recalled_seq", sa.BigInteger(), nullable=True),
    sa.UniqueConstraint("group_id", "client_msg_id", "sender_id", name="uq_group_messages_client_id"),
)

invites = sa.Table(
    "group_invites",
    metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("group_id", BigId, sa.ForeignKey("chat_groups.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=True),
    sa.Column("max_uses", sa.Integer(), nullable=True),
    sa.Column("uses", sa.Integer(), nullable=False),
    sa.Column("revoked", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
)
