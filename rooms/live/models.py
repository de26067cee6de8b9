"""The live-room tables (SQLAlchemy Core), mirrored by the "live" migration branch."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: One row per room: the record every process agrees on (SQL is its source of truth).
rooms = sa.Table(
    "live_rooms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("host_id", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("pinned_product_id", sa.String(64), nullable=True),
    sa.Column("slow_mode_s", sa.Integer, nullable=False, server_default="0"),
)

#: Host moderation per user and room; a row exists only while a mute or ban applies.
moderation = sa.Table(
    "live_room_moderation",
    metadata,
    sa.Column("room_id", sa.Integer, sa.ForeignKey("live_rooms.id"), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    #: Epoch milliseconds the mute ends; 0 = until unmuted; NULL = not muted.
    sa.Column("muted_until_ms", sa.BigInteger, nullable=True),
    sa.Column("banned", sa.Boolean, nullable=False, server_default=sa.false()),
)

#: Embedded mode only: the in-process room totals, written every few seconds.
counters = sa.Table(
    "live_room_counters",
    metadata,
    sa.Column("room_id", sa.Integer, sa.ForeignKey("live_rooms.id"), primary_key=True),
    sa.Column("likes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("comments", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("peak_viewers", sa.Integer, nullable=False, server_default="0"),
)

#: Embedded mode only: one row per user and room who watched (signed in) or interacted.
audience = sa.Table(
    "live_room_audience",
    metadata,
    sa.Column("room_id", sa.Integer, sa.ForeignKey("live_rooms.id"), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("viewed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("interacted", sa.Boolean, nullable=False, server_default=sa.false()),
)
