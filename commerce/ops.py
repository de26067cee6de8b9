"""The WebSocket op ``reserve {sale, quantity, key, source?}``: same body as the HTTP reservation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from realtime.commands import Args
from realtime.node import OpHandler, Session

from . import inputs
from .checkout import Checkout
from .settings import CommerceSettings


def reserve_op(checkout: Checkout, settings: CommerceSettings) -> OpHandler:
    async def reserve(session: Session, args: Args) -> Mapping[str, Any]:
        sale_id = inputs.identifier(args.raw("sale"), "sale")
        wanted = inputs.reserve_request(args, key=args.raw("key"), default_source="room", settings=settings)
        reply = await checkout.reserve(session.identity, sale_id, wanted)
        return reply.reservation.as_dict()

    return reserve
