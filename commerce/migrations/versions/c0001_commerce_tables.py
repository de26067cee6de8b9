"""Commerce tables: products, flash sales, reservations, orders.

Revision ID: c0001_commerce
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c0001_commerce"
down_revision = None
branch_labels = ("commerce",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commerce_products",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(128), nullable=False, index=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("image_url", sa.String(2000)),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "commerce_sales",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("product_id", sa.String(32), sa.ForeignKey("commerce_products.id"), nullable=False),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("price_cents", sa.BigInteger, nullable=False),
        sa.Column("per_user_limit", sa.Integer, nullable=False),
        sa.Column("hold_seconds", sa.Integer, nullable=False),
        sa.Column("room_id", sa.String(128), index=True),
        sa.Column("group_id", sa.String(128)),
        sa.Column("starts_ms", sa.BigInteger),
        sa.Column("ends_ms", sa.BigInteger),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False, server_default="1"),
        sa.Column("announced_ms", sa.BigInteger),
        sa.Column("closed_ms", sa.BigInteger),
    )
    op.create_table(
        "commerce_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("sale_id", sa.String(32), sa.ForeignKey("commerce_sales.id"), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("idem_key", sa.String(128)),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user_id", "idem_key", name="uq_commerce_reservations_user_key"),
    )
    op.create_index("ix_commerce_reservations_sale_status", "commerce_reservations", ["sale_id", "status"])
    op.create_table(
        "commerce_orders",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "reservation_id",
            sa.String(32),
            sa.ForeignKey("commerce_reservations.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("sale_id", sa.String(32), nullable=False, index=True),
        sa.Column("user_id", sa.String(128), nullable=False, index=True),
        sa.Column("product_id", sa.String(32), nullable=False),
        sa.Column("product_title", sa.String(200), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("price_cents", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("room_id", sa.String(128), index=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("commerce_orders")
    op.drop_index("ix_commerce_reservations_sale_status", "commerce_reservations")
    op.drop_table("commerce_reservations")
    op.drop_table("commerce_sales")
    op.drop_table("commerce_products")
