"""The two WebSocket encodings of the contract, and splitting a frame into its objects."""

from __future__ import annotations

from typing import Any, Literal

import msgpack
import orjson

Protocol = Literal["json", "msgpack"]

SUBPROTOCOLS: dict[Protocol, str] = {"json": "livemart.json", "msgpack": "livemart.msgpack"}


class BadFrame(ValueError):
    """A frame that does not decode to an object or an array of objects."""


def encode(protocol: Protocol, obj: dict[str, Any]) -> bytes:
    """One client command as frame bytes (sent as text for JSON, binary for msgpack)."""
    if protocol == "json":
        return orjson.dumps(obj)
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def decode(protocol: Protocol, frame: bytes) -> list[dict[str, Any]]:
    """The objects in a server frame: one, or each element of a batched array."""
    try:
        value = orjson.loads(frame) if protocol == "json" else msgpack.unpackb(frame, raw=False)
    except ValueError as exc:  # orjson's and msgpack's decode errors are ValueErrors
        raise BadFrame(str(exc)) from exc
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, dict) for item in items):
        raise BadFrame("frame holds something other than objects")
    return items
