"""Error codes and close codes as data: one table, one exception type.

Every failure a client can see is a :class:`ProtocolError` carrying a code from
:data:`ERROR_STATUS`. The gateway turns it into a WebSocket error reply and the HTTP
layer into ``{"error": {...}}`` with the status listed here, so both surfaces always
agree on what a code means.
"""

from __future__ import annotations

from enum import IntEnum

#: Contract error code -> HTTP status used when the error crosses the HTTP API.
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_member": 403,
    "muted": 403,
    "banned": 403,
    "not_found": 404,
    "conflict": 409,
    "sold_out": 409,
    "limit_exceeded": 409,
    "not_started": 409,
    "ended": 409,
    "expired": 410,
    "too_large": 413,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}


class ProtocolError(Exception):
    """A failure that is reported to the client with a contract error code."""

    def __init__(self, code: str, message: str = "") -> None:
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message or code.replace("_", " "))
        self.code = code
        self.message = message or code.replace("_", " ")

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class CloseCode(IntEnum):
    """WebSocket close codes livemart sends, and what a client should do about them.

    1000-1015 are RFC 6455's; 4000-4999 are ours. A client reconnects (with recovery)
    after every code except UNAUTHORIZED, FORBIDDEN and POLICY_VIOLATION, which need
    the user to change something first.
    """

    NORMAL = 1000
    #: Undecodable frame type.
    UNSUPPORTED_DATA = 1003
    #: Text frame that is not UTF-8.
    INVALID_PAYLOAD = 1007
    #: Flooding: the command queue overflowed.
    POLICY_VIOLATION = 1008
    #: Frame over the size limit.
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    #: Graceful drain: reconnect at once, to any process.
    SERVICE_RESTART = 1012
    #: The access token is missing where required, forged or expired.
    UNAUTHORIZED = 4001
    #: Nothing (not even a pong) arrived within the idle timeout: the client is gone.
    IDLE_TIMEOUT = 4002
    #: The server lost track of a channel's stream (e.g. after a broker outage):
    #: reconnect and resubscribe with ``since`` to recover or resync.
    RESYNC = 4011
    #: The client read too slowly and its outgoing buffer overflowed.
    SLOW = 4008
