"""HTTP plumbing shared by every domain's endpoints: JSON bodies, identity, errors.

Domains raise :class:`ProtocolError` from handlers; :func:`error_response` turns it
into ``{"error": {"code", "message"}}`` with the status from the error table.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .auth import Identity, TokenAuthority
from .commands import Args
from .errors import ProtocolError

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    413: "too_large",
    415: "bad_request",
    429: "rate_limited",
    503: "unavailable",
}


class JSON(Response):
    """JSON response rendered with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ProtocolError, headers: dict[str, str] | None = None) -> Response:
    return JSON({"error": error.as_dict()}, status_code=error.status, headers=headers)


async def protocol_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ProtocolError):
        raise exc
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405s, in the contract's error shape."""
    if not isinstance(exc, HTTPException):
        raise exc
    code = _STATUS_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "bad_request")
    body = {"error": {"code": code, "message": str(exc.detail)}}
    return JSON(body, status_code=exc.status_code, headers=exc.headers)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    return JSON({"error": {"code": "internal", "message": "internal error"}}, status_code=500)


def identity(request: Request) -> Identity:
    """The caller from ``Authorization: Bearer``; a guest without one."""
    tokens: TokenAuthority = request.app.state.tokens
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise ProtocolError("unauthorized", "use Authorization: Bearer <token>")
    return tokens.verify(token.strip() or None)


def user_id(request: Request) -> str:
    """The signed-in caller's id, or ``unauthorized``."""
    return identity(request).require_user()


async def json_body(request: Request) -> Args:
    """The request's JSON object, size-limited, as typed :class:`Args`."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError("too_large", f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ProtocolError("too_large", f"body over {limit} bytes")
    if not body:
        return Args({})
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_request", "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_request", "body must be a JSON object")
    return Args(value)


def require_api_key(request: Request) -> None:
    """Gate for the server-to-server API (off when no key is configured)."""
    expected: str | None = request.app.state.settings.api_key
    if expected is None:
        raise ProtocolError("not_found", "the server-to-server API is off (LIVEMART_API_KEY unset)")
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ProtocolError("unauthorized", "missing or wrong X-API-Key")
