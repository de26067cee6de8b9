"""SQL for products and flash sales."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from realtime.storage import Database

from .entities import Product, Sale, SaleRecord, new_id
from .inputs import ProductDraft, SaleDraft
from .models import products, sales

_SALE_COLUMNS = [*sales.c, *(c.label(f"p_{c.name}") for c in products.c)]


def _sale_select() -> sa.Select[Any]:
    return sa.select(*_SALE_COLUMNS).select_from(sales.join(products, sales.c.product_id == products.c.id))


def _record(row: Any) -> SaleRecord:
    m = row._mapping
    product = Product.from_row({c.name: m[f"p_{c.name}"] for c in products.c})
    return SaleRecord(Sale.from_row(m, product), m["generation"], m["announced_ms"], m["closed_ms"])


class CatalogStore:
    """Products and sales in SQL; every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_product(self, draft: ProductDraft, owner_id: str, now: int) -> Product:
        product = Product(
            new_id(), owner_id, draft.title, draft.price_cents, draft.currency, draft.image_url, now
        )
        async with self.db.begin() as conn:
            await conn.execute(
                products.insert().values(
                    id=product.id,
                    owner_id=owner_id,
                    title=product.title,
                    price_cents=product.price_cents,
                    currency=product.currency,
                    image_url=product.image_url,
                    created_ms=now,
                )
            )
        return product

    async def product(self, product_id: str) -> Product | None:
        async with self.db.begin() as conn:
            row = (await conn.execute(products.select().where(products.c.id == product_id))).first()
        return None if row is None else Product.from_row(row._mapping)

    async def create_sale(self, draft: SaleDraft, product: Product, now: int) -> Sale:
        sale = Sale(
            id=new_id(),
            product=product,
            owner_id=product.owner_id,
            stock=draft.stock,
            price_cents=product.price_cents if draft.price_cents is None else draft.price_cents,
            per_user_limit=draft.per_user_limit,
            hold_seconds=draft.hold_seconds,
            room_id=draft.room_id,
            group_id=draft.group_id,
            starts_ms=draft.starts_ms,
            ends_ms=draft.ends_ms,
            created_ms=now,
        )
        async with self.db.begin() as conn:
            await conn.execute(
                sales.insert().values(
                    id=sale.id,
                    product_id=product.id,
                    owner_id=sale.owner_id,
                    stock=sale.stock,
                    price_cents=sale.price_cents,
                    per_user_limit=sale.per_user_limit,
                    hold_seconds=sale.hold_seconds,
                    room_id=sale.room_id,
                    group_id=sale.group_id,
                    starts_ms=sale.starts_ms,
                    ends_ms=sale.ends_ms,
                    created_ms=now,
                    generation=1,
                )
            )
        return sale

    async def sale(self, sale_id: str) -> SaleRecord | None:
        async with self.db.begin() as conn:
            row = (await conn.execute(_sale_select().where(sales.c.id == sale_id))).first()
        return None if row is None else _record(row)

    async def open_sales(self, *, closed_since_ms: int | None = None) -> list[SaleRecord]:
        """Sales not closed yet, and those closed at or after ``closed_since_ms``."""
        recent: sa.ColumnElement[bool] = sales.c.closed_ms.is_(None)
        if closed_since_ms is not None:
            recent = sa.or_(recent, sales.c.closed_ms >= closed_since_ms)
        async with self.db.begin() as conn:
            return [_record(row) for row in await conn.execute(_sale_select().where(recent))]

    async def room_sales(self, room_id: str) -> list[SaleRecord]:
        """Open sales announced in a room, oldest first."""
        query = (
            _sale_select()
            .where(sales.c.room_id == room_id, sales.c.closed_ms.is_(None))
            .order_by(sales.c.created_ms)
        )
        async with self.db.begin() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def product_sales(self, product_id: str) -> list[SaleRecord]:
        """Open sales of a product, newest first."""
        query = (
            _sale_select()
            .where(sales.c.product_id == product_id, sales.c.closed_ms.is_(None))
            .order_by(sales.c.created_ms.desc())
        )
        async with self.db.begin() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def mark_announced(self, sale_id: str, now: int) -> bool:
        """True for exactly one caller cluster-wide: the one that must publish ``sale.start``."""
        stmt = (
            sales.update()
            .where(sales.c.id == sale_id, sales.c.announced_ms.is_(None))
            .values(announced_ms=now)
        )
        async with self.db.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def mark_closed(self, sale_id: str, now: int) -> bool:
        """True for exactly one caller cluster-wide: the one that must publish ``sale.end``."""
        stmt = sales.update().where(sales.c.id == sale_id, sales.c.closed_ms.is_(None)).values(closed_ms=now)
        async with self.db.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1
