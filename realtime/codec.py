"""Wire codecs for the two subprotocols, ``livemart.json`` and ``livemart.msgpack``.

Pure functions of bytes: no sockets, no event loop (see protocol parsing in
:mod:`realtime.commands`). Both codecs carry the same structures; JSON travels in
text frames and msgpack in binary frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgpack
import orjson
from websockets.frames import Frame, Opcode

from .errors import ProtocolError


class Codec:
    """Turns command frames into dicts and pushes/replies into frame payloads."""

    #: Subprotocol name negotiated in the handshake.
    name: str = ""
    #: WebSocket opcode of frames this codec produces.
    opcode: Opcode = Opcode.TEXT

    def loads(self, payload: bytes) -> Any:
        raise NotImplementedError

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def frame(self, value: Any) -> bytes:
        """A complete unmasked server frame holding ``value``."""
        return frame_bytes(self.opcode, self.dumps(value))


class JsonCodec(Codec):
    name = "livemart.json"
    opcode = Opcode.TEXT

    def loads(self, payload: bytes) -> Any:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_request", f"malformed JSON: {exc}") from None

    def dumps(self, value: Any) -> bytes:
        return orjson.dumps(value)


class MsgpackCodec(Codec):
    name = "livemart.msgpack"
    opcode = Opcode.BINARY

    def loads(self, payload: bytes) -> Any:
        try:
            return msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise ProtocolError("bad_request", f"malformed msgpack: {exc}") from None

    def dumps(self, value: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


JSON: Final = JsonCodec()
MSGPACK: Final = MsgpackCodec()
#: Codecs in server preference order; the first is the default when none is asked for.
CODECS: Final[Sequence[Codec]] = (JSON, MSGPACK)
BY_NAME: Final = {codec.name: codec for codec in CODECS}


def frame_bytes(opcode: Opcode, payload: bytes) -> bytes:
    """Serialize one unmasked, unfragmented server frame."""
    return Frame(opcode, payload).serialize(mask=False, extensions=[])


def push_batch(pushes: Sequence[dict[str, Any]]) -> Any:
    """The value sent for a batch: one push object alone, or an array of them."""
    return pushes[0] if len(pushes) == 1 else list(pushes)
