"""The commerce tables (SQLAlchemy Core). Times are integer milliseconds since the epoch (UTC).

Reservation rows exist only for holds the ledger granted (bounded by stock), plus rare
``void`` tombstones the sweeper writes to fence out a hold whose row never arrived.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ID = 32
USER = 128

products = sa.Table(
    "commerce_products",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("owner_id", sa.String(USER), nullable=False, index=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("image_url", sa.String(2000)),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

sales = sa.Table(
    "commerce_sales",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("product_id", sa.String(ID), sa.ForeignKey("commerce_products.id"), nullable=False),
    sa.Column("owner_id", sa.String(USER), nullable=False),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("per_user_limit", sa.Integer, nullable=False),
    sa.Column("hold_seconds", sa.Integer, nullable=False),
    sa.Column("room_id", sa.String(USER), index=True),
    sa.Column("group_id", sa.String(USER)),
    sa.Column("starts_ms", sa.BigInteger),
    sa.Column("ends_ms", sa.BigInteger),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    # Fence between reconciliation and in-flight reservations (see reconcile.py).
    sa.Column("generation", sa.Integer, nullable=False, server_default="1"),
    sa.Column("announced_ms", sa.BigInteger),
    sa.Column("closed_ms", sa.BigInteger),
)

reservations = sa.Table(
    "commerce_reservations",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("sale_id", sa.String(ID), sa.ForeignKey("commerce_sales.id"), nullable=False),
    sa.Column("user_id", sa.String(USER), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    # held | confirmed | released | expired | void
    sa.Column("status", sa.String(16), nullable=False),
    # room | group | api
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("idem_key", sa.String(128)),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("user_id", "idem_key", name="uq_commerce_reservations_user_key"),
    sa.Index("ix_commerce_reservations_sale_status", "sale_id", "status"),
)

orders = sa.Table(
    "commerce_orders",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column(
        "reservation_id",
        sa.String(ID),
        sa.ForeignKey("commerce_reservations.id"),
        nullable=False,
        unique=True,
    ),
    sa.Column("sale_id", sa.String(ID), nullable=False, index=True),
    sa.Column("user_id", sa.String(USER), nullable=False, index=True),
    sa.Column("product_id", sa.String(ID), nullable=False),
    sa.Column("product_title", sa.String(200), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("room_id", sa.String(USER), index=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)
