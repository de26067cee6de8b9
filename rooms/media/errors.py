"""Errors the relay reports to HTTP clients: each class carries its status and code."""

from typing import ClassVar


class MediaError(Exception):
    """Base class; `routes` turns any of these into `{"error": {"code", "message"}}`."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"


class BadOffer(MediaError):
    """The body is not a usable SDP offer (RFC 9725: 400)."""


class UnsupportedMediaType(MediaError):
    """The body is not `application/sdp` (RFC 9725: 415)."""

    status = 415
    code = "unsupported_media_type"


class OfferTooLarge(MediaError):
    """Offers are a few KiB; a huge body is refused before it is buffered."""

    status = 413
    code = "too_large"


class NotAcceptable(MediaError):
    """The offer's media cannot be served as a whole (RFC 9725: 406, no partial answers)."""

    status = 406
    code = "not_acceptable"


class RoomBusy(MediaError):
    """The room already has a publisher in this process."""

    status = 409
    code = "already_publishing"


class RoomOffline(MediaError):
    """Nobody publishes in the room, so there is nothing to play."""

    status = 409
    code = "offline"


class Unavailable(MediaError):
    """The room is full or the relay is shutting down; the client may retry later."""

    status = 503
    code = "unavailable"
    retry_after_s: ClassVar[int] = 10


class SessionNotFound(MediaError):
    """No such session under this room (already ended, or never existed)."""

    status = 404
    code = "not_found"


class NotOwner(MediaError):
    """Only the user who created a session may end it."""

    status = 403
    code = "forbidden"


class TrickleNotSupported(MediaError):
    """PATCH (trickle ICE, ICE restart) is not implemented (RFC 9725 section 4.3.1: 501)."""

    status = 501
    code = "not_implemented"
