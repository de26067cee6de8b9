"""What live rooms need to know about products and sales, without importing commerce.

commerce implements :class:`ProductCatalog`; the composition root hands it to the
live-rooms module. Keeping the protocol here keeps the dependency one-way:
commerce builds on rooms, never the reverse.
"""

from __future__ import annotations

from typing import Any, Protocol


class ProductCatalog(Protocol):
    async def product_card(self, product_id: str) -> dict[str, Any] | None:
        """The product as a pin shows it, or None if unknown: ``{id, title,
        price_cents, currency, image_url, owner_id, sale}`` where ``sale`` is the active
        sale for it (``{id, remaining, price_cents, per_user_limit, starts_at, ends_at}``)
        or None."""

    async def room_sales(self, room_id: str) -> list[dict[str, Any]]:
        """Active flash sales announced in ``room_id``, each with live ``remaining``."""
