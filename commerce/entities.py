"""Products, sales, reservations and orders as plain values, and their JSON shapes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .ledger import Level, Terms

#: Reservation statuses. ``void`` marks a hold the sweeper found with no row: it was
#: never acknowledged to a client, and its row fences out the late insert.
HELD, CONFIRMED, RELEASED, EXPIRED, VOID = "held", "confirmed", "released", "expired", "void"
#: Statuses whose units are out of stock.
LIVE_STATUSES = (HELD, CONFIRMED)
#: Where a reservation came from, for the host's "orders by source" figures.
SOURCES = ("room", "group", "api")


def new_id() -> str:
    return secrets.token_hex(8)


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 in UTC (``2025-01-31T12:00:00.000Z``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    owner_id: str
    title: str
    price_cents: int
    currency: str
    image_url: str | None
    created_ms: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Product:
        return cls(
            row["id"],
            row["owner_id"],
            row["title"],
            row["price_cents"],
            row["currency"],
            row["image_url"],
            row["created_ms"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "title": self.title,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "image_url": self.image_url,
            "created_at": iso(self.created_ms),
        }


@dataclass(frozen=True, slots=True)
class Sale:
    """A flash sale's fixed terms (nothing here changes after creation)."""

    id: str
    product: Product
    owner_id: str
    stock: int
    price_cents: int
    per_user_limit: int
    hold_seconds: int
    room_id: str | None
    group_id: str | None
    starts_ms: int | None
    ends_ms: int | None
    created_ms: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], product: Product) -> Sale:
        return cls(
            row["id"],
            product,
            row["owner_id"],
            row["stock"],
            row["price_cents"],
            row["per_user_limit"],
            row["hold_seconds"],
            row["room_id"],
            row["group_id"],
            row["starts_ms"],
            row["ends_ms"],
            row["created_ms"],
        )

    def terms(self) -> Terms:
        return Terms(
            stock=self.stock,
            per_user_limit=self.per_user_limit,
            hold_ms=self.hold_seconds * 1000,
            starts_ms=self.starts_ms,
            ends_ms=self.ends_ms,
        )

    def started(self, now: int) -> bool:
        return self.starts_ms is None or now >= self.starts_ms

    def over(self, now: int) -> bool:
        return self.ends_ms is not None and now >= self.ends_ms

    def as_dict(self, level: Level | None, now: int, *, closed: bool = False) -> dict[str, Any]:
        """The public view; ``remaining`` is live when the ledger knows the sale."""
        remaining = None if level is None else level.remaining
        if closed or self.over(now):
            status = "ended"
        elif not self.started(now):
            status = "scheduled"
        elif remaining == 0:
            status = "sold_out"
        else:
            status = "active"
        return {
            "id": self.id,
            "product_id": self.product.id,
            "product": self.product.as_dict(),
            "title": self.product.title,
            "owner_id": self.owner_id,
            "stock": self.stock,
            "remaining": remaining,
            "version": None if level is None else level.version,
            "price_cents": self.price_cents,
            "currency": self.product.currency,
            "per_user_limit": self.per_user_limit,
            "hold_seconds": self.hold_seconds,
            "room_id": self.room_id,
            "group_id": self.group_id,
            "starts_at": iso(self.starts_ms),
            "ends_at": iso(self.ends_ms),
            "status": status,
            "created_at": iso(self.created_ms),
        }


@dataclass(frozen=True, slots=True)
class SaleRecord:
    """A sale with the fields that do change, as last read from SQL."""

    sale: Sale
    generation: int
    announced_ms: int | None
    closed_ms: int | None


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    sale_id: str
    user_id: str
    quantity: int
    status: str
    source: str
    idem_key: str | None
    expires_ms: int
    created_ms: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Reservation:
        return cls(
            row["id"],
            row["sale_id"],
            row["user_id"],
            row["quantity"],
            row["status"],
            row["source"],
            row["idem_key"],
            row["expires_ms"],
            row["created_ms"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sale_id": self.sale_id,
            "quantity": self.quantity,
            "status": self.status,
            "source": self.source,
            "expires_at": iso(self.expires_ms),
            "created_at": iso(self.created_ms),
        }


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    reservation_id: str
    sale_id: str
    user_id: str
    product_id: str
    product_title: str
    quantity: int
    price_cents: int
    amount_cents: int
    currency: str
    source: str
    room_id: str | None
    created_ms: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Order:
        return cls(
            row["id"],
            row["reservation_id"],
            row["sale_id"],
            row["user_id"],
            row["product_id"],
            row["product_title"],
            row["quantity"],
            row["price_cents"],
            row["amount_cents"],
            row["currency"],
            row["source"],
            row["room_id"],
            row["created_ms"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reservation_id": self.reservation_id,
            "sale_id": self.sale_id,
            "user_id": self.user_id,
            "product_id": self.product_id,
            "product_title": self.product_title,
            "quantity": self.quantity,
            "price_cents": self.price_cents,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "source": self.source,
            "room_id": self.room_id,
            "created_at": iso(self.created_ms),
        }
