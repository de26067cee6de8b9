"""The catalog: products and sales with their live stock (rooms.catalog.ProductCatalog).

It is built before the live-rooms module (which shows pinned products and a room's
sales) and owns the stock ledger, so that every reader of ``remaining`` asks the same
place. Sale terms never change after creation, so they are cached per process; the
lists of a room's or a product's open sales are cached for a second, since each
subscribe to a room asks for them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from realtime.errors import ProtocolError
from realtime.server import Core

from .entities import Product, Sale, SaleRecord, now_ms
from .ledger import Level, MemoryLedger, StockLedger
from .redis_ledger import RedisLedger
from .settings import CommerceSettings
from .store import CatalogStore

#: How long the open-sale lists of a room or product are reused.
LIST_TTL_S = 1.0
#: Sales whose terms are cached at most (the cache is cleared beyond that).
MAX_CACHED_SALES = 10_000

T = TypeVar("T")


class _Recent(Generic[T]):
    """Values reused for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._items: dict[str, tuple[float, T]] = {}

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: T) -> None:
        if len(self._items) > MAX_CACHED_SALES:
            self._items.clear()
        self._items[key] = (time.monotonic() + self._ttl_s, value)

    def drop(self, key: str | None) -> None:
        if key is not None:
            self._items.pop(key, None)


def create_ledger(core: Core, settings: CommerceSettings) -> StockLedger:
    """Redis when the deployment has one (a cluster), else in-process."""
    ttl_ms = settings.idempotency_ttl_s * 1000
    if core.redis is None:
        return MemoryLedger(key_ttl_ms=ttl_ms)
    prefix = core.settings.redis_prefix
    return RedisLedger(core.redis, core.redis_connections, prefix=prefix, key_ttl_ms=ttl_ms)


class Catalog:
    """Products, sales and live stock for everyone who shows them."""

    def __init__(self, core: Core, *, settings: CommerceSettings | None = None) -> None:
        self.settings = settings or CommerceSettings()
        self.store = CatalogStore(core.db)
        self.ledger = create_ledger(core, self.settings)
        self._sales: dict[str, Sale] = {}
        self._room_sales: _Recent[list[SaleRecord]] = _Recent(LIST_TTL_S)
        self._product_sales: _Recent[list[SaleRecord]] = _Recent(LIST_TTL_S)

    # --- lookups ------------------------------------------------------------------

    async def product(self, product_id: str) -> Product:
        product = await self.store.product(product_id)
        if product is None:
            raise ProtocolError("not_found", "no such product")
        return product

    async def sale(self, sale_id: str) -> Sale:
        """A sale's terms (cached); ``not_found`` for an unknown id."""
        sale = self._sales.get(sale_id)
        if sale is None:
            record = await self.store.sale(sale_id)
            if record is None:
                raise ProtocolError("not_found", "no such flash sale")
            sale = self.remember(record.sale)
        return sale

    def remember(self, sale: Sale) -> Sale:
        if len(self._sales) >= MAX_CACHED_SALES:
            self._sales.clear()
        self._sales[sale.id] = sale
        self._room_sales.drop(sale.room_id)
        self._product_sales.drop(sale.product.id)
        return sale

    async def level(self, sale_id: str) -> Level | None:
        return (await self.ledger.levels([sale_id]))[sale_id]

    async def view(self, sale: Sale, *, closed: bool = False) -> dict[str, Any]:
        """The public view of one sale with live ``remaining``."""
        return sale.as_dict(await self.level(sale.id), now_ms(), closed=closed)

    async def views(self, records: Sequence[SaleRecord]) -> list[dict[str, Any]]:
        """Public views of sales, with ``remaining`` read from the ledger in one batch."""
        levels = await self.ledger.levels([r.sale.id for r in records]) if records else {}
        now = now_ms()
        return [r.sale.as_dict(levels[r.sale.id], now, closed=r.closed_ms is not None) for r in records]

    # --- rooms.catalog.ProductCatalog -----------------------------------------------

    async def product_card(self, product_id: str) -> dict[str, Any] | None:
        product = await self.store.product(product_id)
        if product is None:
            return None
        records = self._product_sales.get(product_id)
        if records is None:
            records = await self.store.product_sales(product_id)
            self._product_sales.put(product_id, records)
        now = now_ms()
        active = [r for r in records if not r.sale.over(now)][:1]
        card = product.as_dict()
        card["sale"] = (await self.views(active))[0] if active else None
        return card

    async def room_sales(self, room_id: str) -> list[dict[str, Any]]:
        records = self._room_sales.get(room_id)
        if records is None:
            records = await self.store.room_sales(room_id)
            self._room_sales.put(room_id, records)
        now = now_ms()
        return await self.views([r for r in records if not r.sale.over(now)])
