"""Validating what clients send (HTTP bodies, WS args): pure functions, no I/O.

Every rejection is a ``bad_request`` (or ``too_large``) naming the field, raised before
anything touches stock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from realtime.commands import Args
from realtime.errors import ProtocolError

from .entities import SOURCES
from .settings import CommerceSettings

_CURRENCY = re.compile(r"[A-Za-z]{3}")
#: Largest Idempotency-Key accepted (Stripe allows 255; 128 keeps keys short in Redis).
MAX_KEY_LENGTH = 128
#: Id strings other domains and we hand out are short; anything longer is not an id.
MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class ProductDraft:
    title: str
    price_cents: int
    currency: str
    image_url: str | None


@dataclass(frozen=True, slots=True)
class SaleDraft:
    product_id: str
    stock: int
    #: None: the product's price.
    price_cents: int | None
    per_user_limit: int
    hold_seconds: int
    room_id: str | None
    group_id: str | None
    starts_ms: int | None
    ends_ms: int | None


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    quantity: int
    key: str | None
    source: str


def product_draft(body: Args, settings: CommerceSettings) -> ProductDraft:
    title = body.text("title", max_len=200).strip()
    if not title:
        raise ProtocolError("bad_request", "title must not be blank")
    price = body.integer("price_cents", min=0, max=settings.max_price_cents)
    currency = body.text("currency", max_len=16)
    if not _CURRENCY.fullmatch(currency):
        raise ProtocolError("bad_request", "currency must be a three-letter ISO 4217 code")
    image_url = body.opt_text("image_url", max_len=2000)
    if image_url is not None and not image_url.startswith(("https://", "http://", "/")):
        raise ProtocolError("bad_request", "image_url must be an http(s) URL or a path")
    return ProductDraft(title, price, currency.upper(), image_url)


def sale_draft(body: Args, settings: CommerceSettings, now_ms: int) -> SaleDraft:
    product_id = identifier(body.raw("product_id"), "product_id")
    stock = body.integer("stock", min=1, max=settings.max_stock)
    price = body.opt_integer("price_cents", min=0, max=settings.max_price_cents)
    limit = int_or(body, "per_user_limit", 1, min=1, max=settings.max_per_user_limit)
    hold = int_or(body, "hold_seconds", 120, min=1, max=settings.max_hold_seconds)
    room_id = optional_identifier(body.raw("room_id"), "room_id")
    group_id = optional_identifier(body.raw("group_id"), "group_id")
    starts = timestamp_ms(body.raw("starts_at"), "starts_at")
    ends = timestamp_ms(body.raw("ends_at"), "ends_at")
    if ends is not None and ends <= max(starts or 0, now_ms):
        raise ProtocolError("bad_request", "ends_at must be in the future and after starts_at")
    return SaleDraft(product_id, stock, price, limit, hold, room_id, group_id, starts, ends)


def reserve_request(
    args: Args, *, key: Any, default_source: str, settings: CommerceSettings
) -> ReserveRequest:
    """``quantity`` (default 1), the idempotency key (optional), ``source``."""
    quantity = int_or(args, "quantity", 1, min=1, max=settings.max_per_user_limit)
    source = args.opt_text("source", max_len=8) or default_source
    if source not in SOURCES:
        raise ProtocolError("bad_request", f"source must be one of {', '.join(SOURCES)}")
    return ReserveRequest(quantity, idempotency_key(key), source)


def int_or(args: Args, name: str, default: int, *, min: int, max: int) -> int:
    """An optional integer field within [min, max], ``default`` when absent."""
    value = args.opt_integer(name, default, min=min, max=max)
    return default if value is None else value


def idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ProtocolError("bad_request", "the idempotency key must be a non-empty printable string")
    if len(value) > MAX_KEY_LENGTH:
        raise ProtocolError("too_large", f"the idempotency key is longer than {MAX_KEY_LENGTH} characters")
    return value


def identifier(value: Any, name: str) -> str:
    """An id given as a string or an integer (other domains may use either)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_request", f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise ProtocolError("bad_request", f"{name} is not a valid id")
    return value


def optional_identifier(value: Any, name: str) -> str | None:
    return None if value is None else identifier(value, name)


def timestamp_ms(value: Any, name: str) -> int | None:
    """ISO 8601 with a time zone, or seconds since the epoch; None when absent."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < 10**11:
            raise ProtocolError("bad_request", f"{name} is out of range")
        return int(value * 1000)
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                raise ProtocolError("bad_request", f"{name} needs a time zone (e.g. Z)")
            return int(parsed.timestamp() * 1000)
    raise ProtocolError(
        "bad_request", f"{name} must be ISO 8601 (e.g. 2025-05-01T20:00:00Z) or epoch seconds"
    )
