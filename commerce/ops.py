"""The WebSocket op ``reserve {sale, quantity, key, source?}``: same body as the HTTP reservation."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from realtime.auth import Identity
from realtime.commands import Args
from realtime.node import OpHandler, Reply, Session

from . import inputs
from .checkout import Checkout
from .settings import CommerceSettings


def reserve_op(checkout: Checkout, settings: CommerceSettings) -> OpHandler:
    """A known sell-out is refused at once; anything else goes on to the ledger."""

    def reserve(session: Session, args: Args) -> Coroutine[Any, Any, Reply]:
        sale_id = inputs.identifier(args.raw("sale"), "sale")
        wanted = inputs.reserve_request(args, key=args.raw("key"), default_source="room", settings=settings)
        checkout.refuse_at_once(session.identity, sale_id, wanted)
        return hold(session.identity, sale_id, wanted)

    async def hold(identity: Identity, sale_id: str, wanted: inputs.ReserveRequest) -> Reply:
        reply = await checkout.reserve(identity, sale_id, wanted)
        return reply.reservation.as_dict()

    return reserve
