"""Creating products and flash sales, and announcing when a sale starts and ends.

Rights come from data: a product's owner creates its sales; announcing a sale in a
room needs the room's host; a members-only sale needs an owner or admin of the group.
``sale.start`` and ``sale.end`` are published once cluster-wide: a conditional SQL
update elects the one process that publishes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from realtime.errors import ProtocolError
from realtime.node import Node

from .announce import room_channel
from .catalog import Catalog
from .entities import Product, Sale, now_ms
from .inputs import ProductDraft, SaleDraft
from .ledger import Snapshot
from .peers import GroupRoles, RoomDirectory


class SaleDesk:
    """The merchant's side: products, sales, and their start/end announcements."""

    def __init__(self, *, catalog: Catalog, rooms: RoomDirectory, groups: GroupRoles, node: Node) -> None:
        self._catalog = catalog
        self._rooms = rooms
        self._groups = groups
        self._node = node

    async def create_product(self, owner_id: str, draft: ProductDraft) -> Product:
        return await self._catalog.store.create_product(draft, owner_id, now_ms())

    async def create_sale(self, user_id: str, draft: SaleDraft) -> dict[str, Any]:
        product = await self._catalog.product(draft.product_id)
        if product.owner_id != user_id:
            raise ProtocolError("forbidden", "only the product's owner may put it on sale")
        if draft.room_id is not None:
            room = await self._rooms.room(draft.room_id)
            if room is None:
                raise ProtocolError("not_found", "no such room")
            if room.host_id != user_id:
                raise ProtocolError("forbidden", "only the room's host may announce a sale in it")
            if room.status == "ended":
                raise ProtocolError("conflict", "the room has ended")
            draft = replace(draft, room_id=room.id)  # the room's own spelling of its id
        if draft.group_id is not None:
            role = await self._groups.role(draft.group_id, user_id)
            if role not in ("owner", "admin"):
                raise ProtocolError("forbidden", "only a group's owner or admin may open a sale for it")
        now = now_ms()
        sale = self._catalog.remember(await self._catalog.store.create_sale(draft, product, now))
        # SQL first: if this load fails, the first reservation rebuilds the state from SQL.
        await self._catalog.ledger.load(Snapshot(sale.id, 1, sale.terms()), now)
        if sale.started(now):
            await self.announce_start(sale)
        return await self._catalog.view(sale)

    async def announce_start(self, sale: Sale) -> None:
        """Publish ``sale.start`` if no process did yet."""
        if await self._catalog.store.mark_announced(sale.id, now_ms()) and sale.room_id is not None:
            view = await self._catalog.view(sale)
            await self._node.publish(room_channel(sale.room_id), "sale.start", {"sale": view})

    async def announce_end(self, sale: Sale) -> bool:
        """Close the sale and publish ``sale.end`` if no process did yet."""
        if not await self._catalog.store.mark_closed(sale.id, now_ms()):
            return False
        self._catalog.remember(sale)  # drops the cached open-sale lists that include it
        if sale.room_id is not None:
            await self._node.publish(room_channel(sale.room_id), "sale.end", {"sale_id": sale.id})
        return True
