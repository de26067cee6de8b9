"""Room actions other than comments and moderation: create, end, pin, like, stream
status, and the views (snapshot, public record) built from SQL, shared state and the
product catalog."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from realtime.auth import Identity
from realtime.errors import ProtocolError
from realtime.node import Node

from ..catalog import ProductCatalog
from .activity import Activity
from .directory import RoomDirectory
from .metrics import RoomMetrics
from .records import Room, RoomStatus
from .settings import RoomSettings
from .state import RoomState

#: Most likes one ``like`` command may carry (the contract's bound).
MAX_LIKES_PER_COMMAND = 50


def channel(room_id: str) -> str:
    return f"room:{room_id}"


class RoomService:
    def __init__(
        self,
        *,
        node: Node,
        directory: RoomDirectory,
        state: RoomState,
        activity: Activity,
        catalog: ProductCatalog,
        settings: RoomSettings,
        metrics: RoomMetrics,
    ) -> None:
        self._node = node
        #: Called with the room id after a room ends here (e.g. to stop its media).
        self.end_listeners: list[Callable[[str], Awaitable[None]]] = []
        self.directory = directory
        self.state = state
        self._activity = activity
        self._catalog = catalog
        self._settings = settings
        self._metrics = metrics

    async def host_room(self, user_id: str, room_id: str) -> Room:
        """The room if ``user_id`` hosts it; else ``forbidden`` (or ``not_found``)."""
        room = await self.directory.get(room_id)
        if room.host_id != user_id:
            raise ProtocolError("forbidden", "only the room's host may do this")
        return room

    async def create(self, host_id: str, title: str) -> Room:
        title = title.strip()
        if not title:
            raise ProtocolError("bad_request", "title must not be blank")
        return await self.directory.create(title, host_id)

    async def end(self, user_id: str, room_id: str) -> Room:
        """End the room for good; subscribers get ``room.end {}``. Repeating it is harmless."""
        await self.host_room(user_id, room_id)
        changed = await self.directory.set_status(room_id, "ended")
        view = await self.state.view(room_id, 0)
        if changed or view.status != "ended":
            await self.state.set_status(room_id, "ended")
            await self._node.publish(channel(room_id), "room.end", {})
            await self.state.forget(room_id)
            for listener in self.end_listeners:
                await listener(room_id)
        return await self.directory.get(room_id)

    async def stream_changed(self, room_id: str, status: RoomStatus) -> None:
        """The host's media stream went live or offline (never revives an ended room)."""
        if await self.directory.set_status(room_id, status):
            await self.state.set_status(room_id, status)
            await self._node.publish(channel(room_id), "stream", {"status": status})

    async def pin(self, user_id: str, room_id: str, product_id: str) -> dict[str, Any]:
        room = await self.host_room(user_id, room_id)
        if room.status == "ended":
            raise ProtocolError("ended", "the room has ended")
        card = await self._catalog.product_card(product_id)
        if card is None:
            raise ProtocolError("not_found", f"no product {product_id[:40]}")
        await self.directory.repository.set_pin(room_id, product_id)
        await self.state.set_pin(room_id, product_id)
        await self._node.publish(channel(room_id), "pin", {"product": card})
        return card

    async def unpin(self, user_id: str, room_id: str, product_id: str | None) -> None:
        """Take the pin down; with ``product_id``, only if that product is the one pinned."""
        await self.host_room(user_id, room_id)
        view = await self.state.view(room_id, 0)
        if view.pinned_product_id is None or (product_id and product_id != view.pinned_product_id):
            raise ProtocolError("not_found", "that product is not pinned")
        await self.directory.repository.set_pin(room_id, None)
        await self.state.set_pin(room_id, None)
        await self._node.publish(channel(room_id), "unpin", {})

    async def like(self, identity: Identity, room_id: str, count: int) -> None:
        user_id = identity.require_user()
        if not 1 <= count <= MAX_LIKES_PER_COMMAND:
            raise ProtocolError("bad_request", f"count must be in [1, {MAX_LIKES_PER_COMMAND}]")
        room = await self.directory.get(room_id)
        if room.status == "ended":
            raise ProtocolError("ended", "the room has ended")
        self._activity.like(room_id, user_id, count)
        self._metrics.likes.inc(count)

    async def snapshot(self, identity: Identity, room_id: str) -> dict[str, Any]:
        """The subscribe ``state``; also notes a signed-in subscriber as a viewer."""
        room = await self.directory.get(room_id)
        view = await self.state.view(room_id, self._settings.snapshot_comments)
        pinned, sales = await self._catalog_view(room_id, view.pinned_product_id)
        if identity.user_id is not None:
            self._activity.viewer(room_id, identity.user_id)
        return {
            "id": room.id,
            "title": room.title,
            "host_id": room.host_id,
            "status": view.status,
            "viewers": view.viewers,
            "likes": view.likes,
            "pinned": pinned,
            "sales": sales,
            "comments": view.comments,
            "slow_mode": view.slow_mode_s,
        }

    async def describe(self, room_id: str) -> dict[str, Any]:
        """The public record (GET /api/rooms/{id})."""
        room = await self.directory.get(room_id)
        view = await self.state.view(room_id, 0)
        pinned, sales = await self._catalog_view(room_id, view.pinned_product_id)
        return {
            **room.as_dict(),
            "status": view.status,
            "viewers": view.viewers,
            "likes": view.likes,
            "pinned": pinned,
            "sales": sales,
        }

    async def _catalog_view(
        self, room_id: str, product_id: str | None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        if product_id is None:
            return None, await self._catalog.room_sales(room_id)
        card, sales = await asyncio.gather(
            self._catalog.product_card(product_id), self._catalog.room_sales(room_id)
        )
        return card, sales
