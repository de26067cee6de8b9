"""live rooms: rooms, moderation, embedded-mode counters and audience

Revision ID: live_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "live_0001"
down_revision = None
branch_labels = ("live",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_rooms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("host_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pinned_product_id", sa.String(64), nullable=True),
        sa.Column("slow_mode_s", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_live_rooms_host_id", "live_rooms", ["host_id"])
    op.create_table(
        "live_room_moderation",
        sa.Column("room_id", sa.Integer, sa.ForeignKey("live_rooms.id"), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("muted_until_ms", sa.BigInteger, nullable=True),
        sa.Column("banned", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "live_room_counters",
        sa.Column("room_id", sa.Integer, sa.ForeignKey("live_rooms.id"), primary_key=True),
        sa.Column("likes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("comments", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("peak_viewers", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "live_room_audience",
        sa.Column("room_id", sa.Integer, sa.ForeignKey("live_rooms.id"), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("viewed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("interacted", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("live_room_audience")
    op.drop_table("live_room_counters")
    op.drop_table("live_room_moderation")
    op.drop_index("ix_live_rooms_host_id", table_name="live_rooms")
    op.drop_table("live_rooms")
