"""HTTP side of WHIP (RFC 9725) and WHEP: request checks, answers, error bodies."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .errors import (
    MediaError,
    OfferTooLarge,
    TrickleNotSupported,
    Unavailable,
    UnsupportedMediaType,
)
from .sessions import Role, Session

if TYPE_CHECKING:
    from .relay import MediaRelay

SDP = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024
"""Browser offers are 3-10 KiB; a much larger body is not an offer."""

Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(error: MediaError) -> Response:
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Unavailable) else {}
    body = {"error": {"code": error.code, "message": str(error)}}
    return JSONResponse(body, status_code=error.status, headers=headers)


def guarded(handler: Endpoint) -> Endpoint:
    """Turn the relay's own errors into JSON; access errors (HTTPException) pass through
    to the application's handlers."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except MediaError as error:
            return error_response(error)

    return endpoint


async def read_offer(request: Request) -> str:
    """The SDP offer in the body, refusing other media types and oversized bodies."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != SDP:
        raise UnsupportedMediaType(f"the body must be {SDP}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise OfferTooLarge(f"an SDP offer is at most {MAX_OFFER_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


class MediaEndpoints:
    """`POST /whip/{room}` and `POST /whep/{room}` create sessions at `<that URL>/<id>`.

    Starlette answers 405 to any other method, as RFC 9725 asks of both resources.
    """

    def __init__(self, relay: "MediaRelay") -> None:
        self._relay = relay
        self._access = relay.access
        self._ice_links = ", ".join(f'<{url}>; rel="ice-server"' for url in relay.settings.ice_servers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/whip/{room_id}", guarded(self.whip), methods=["POST", "OPTIONS"]),
            Route(
                "/whip/{room_id}/{session_id}",
                guarded(self.whip_session),
                methods=["DELETE", "PATCH"],
            ),
            Route("/whep/{room_id}", guarded(self.whep), methods=["POST", "OPTIONS"]),
            Route(
                "/whep/{room_id}/{session_id}",
                guarded(self.whep_session),
                methods=["DELETE", "PATCH"],
            ),
        ]

    async def whip(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._options()
        room_id = request.path_params["room_id"]
        owner = await self._access.authorize_publish(request, room_id)
        offer = await read_offer(request)
        return self._created(request, await self._relay.publish(room_id, owner, offer))

    async def whep(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._options()
        room_id = request.path_params["room_id"]
        owner = await self._access.authorize_watch(request, room_id)
        offer = await read_offer(request)
        return self._created(request, await self._relay.watch(room_id, owner, offer))

    async def whip_session(self, request: Request) -> Response:
        if request.method == "PATCH":
            return self._patch(request, "publisher")
        room_id = request.path_params["room_id"]
        caller = await self._access.authorize_publish(request, room_id)
        return await self._delete(request, "publisher", caller)

    async def whep_session(self, request: Request) -> Response:
        if request.method == "PATCH":
            return self._patch(request, "viewer")
        room_id = request.path_params["room_id"]
        caller = await self._access.authorize_watch(request, room_id)
        return await self._delete(request, "viewer", caller)

    async def _delete(self, request: Request, role: Role, caller: str | None) -> Response:
        params = request.path_params
        await self._relay.end_session(role, params["room_id"], params["session_id"], caller)
        return Response(status_code=200)

    def _patch(self, request: Request, role: Role) -> Response:
        self._relay.find(role, request.path_params["room_id"], request.path_params["session_id"])
        raise TrickleNotSupported(
            "trickle ICE and ICE restarts are not supported: put every candidate in the "
            "offer, and start a new session to recover a broken one"
        )

    def _created(self, request: Request, session: Session) -> Response:
        # A path, not an absolute URL: correct behind proxies and under a Mount.
        headers = {"Location": f"{request.url.path.rstrip('/')}/{session.id}"}
        if self._ice_links:
            headers["Link"] = self._ice_links
        return Response(session.answer, status_code=201, media_type=SDP, headers=headers)

    def _options(self) -> Response:
        return Response(status_code=204, headers={"Accept-Post": SDP})
