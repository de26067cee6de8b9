"""Sales figures of a live room for its host (GET /api/rooms/{id}/stats).

Audience figures come from the live-rooms domain (aggregated there: a set-add per user,
never a row per like); holds and orders are counted from SQL rows, which are bounded by
the stock of the room's sales. Definitions:

* ``holds``: reservations ever granted for the room's sales (any status but void).
* ``orders``, ``units``, ``gmv_cents``: confirmed orders, their units and amount.
* ``buyers``: distinct users with an order, wherever they bought.
* ``conversion.all``: viewers who bought / unique viewers; ``interacting``: the same
  among viewers who commented or liked; ``silent``: among viewers who did neither.
  None when the group is empty. Buyers who never watched (e.g. through a group sale
  card) count in ``buyers`` and ``orders_by_source`` but in no conversion.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from realtime.storage import Database

from .entities import SOURCES, VOID
from .models import orders, reservations, sales
from .peers import AudienceInfo


@dataclass(frozen=True, slots=True)
class OrderLine:
    user_id: str
    quantity: int
    amount_cents: int
    currency: str
    source: str


def ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def figures(audience: AudienceInfo, holds: int, lines: Sequence[OrderLine]) -> dict[str, Any]:
    """The stats body from the audience, the hold count and the room's order lines."""
    viewers: Set[str] = audience.viewer_ids
    interacting = audience.interacting_ids & viewers
    silent = viewers - interacting
    buyers = {line.user_id for line in lines}
    by_source = dict.fromkeys(SOURCES, 0)
    gmv: dict[str, int] = {}
    for line in lines:
        by_source[line.source] = by_source.get(line.source, 0) + 1
        gmv[line.currency] = gmv.get(line.currency, 0) + line.amount_cents
    currency = next(iter(gmv)) if len(gmv) == 1 else None
    return {
        "peak_viewers": audience.peak_viewers,
        "unique_viewers": len(viewers),
        "comments": audience.comments,
        "likes": audience.likes,
        "holds": holds,
        "orders": len(lines),
        "units": sum(line.quantity for line in lines),
        # One figure when every sale shares a currency; per currency either way.
        "gmv_cents": gmv[currency] if currency is not None else (0 if not gmv else None),
        "currency": currency,
        "gmv_by_currency": gmv,
        "buyers": len(buyers),
        "conversion": {
            "all": ratio(len(buyers & viewers), len(viewers)),
            "interacting": ratio(len(buyers & interacting), len(interacting)),
            "silent": ratio(len(buyers & silent), len(silent)),
        },
        "orders_by_source": by_source,
    }


async def room_activity(db: Database, room_id: str) -> tuple[int, list[OrderLine]]:
    """Holds granted for the room's sales, and the room's order lines."""
    holds_query = (
        sa.select(sa.func.count())
        .select_from(reservations.join(sales, reservations.c.sale_id == sales.c.id))
        .where(sales.c.room_id == room_id, reservations.c.status != VOID)
    )
    lines_query = sa.select(
        orders.c.user_id, orders.c.quantity, orders.c.amount_cents, orders.c.currency, orders.c.source
    ).where(orders.c.room_id == room_id)
    async with db.begin() as conn:
        holds = int(await conn.scalar(holds_query) or 0)
        lines = [OrderLine(*row) for row in await conn.execute(lines_query)]
    return holds, lines
