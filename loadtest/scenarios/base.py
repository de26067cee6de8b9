"""What every scenario shares: the parent-side setup calls and the worker-side driver."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol, TypeVar

from websockets.exceptions import ConnectionClosed

from loadtest import markers
from loadtest.httpclient import HttpClient, HttpError, Response
from loadtest.options import Options
from loadtest.plan import Member, Plan
from loadtest.stats import Recorder, Totals, now_us, record_us
from loadtest.wsclient import Client, ReplyTimeout

REPLY_TIMEOUT_S = 10.0
"""How long a command or publish may go unanswered before it counts as `timeout`."""

SETUP_CONCURRENCY = 32
"""Setup requests in flight at once (group joins can number in the thousands)."""

T = TypeVar("T")


class SetupError(Exception):
    """The server refused or failed a setup call; the run cannot start."""


class Scenario(Protocol):
    """One scenario: setup in the parent, a driver per worker, and its own totals."""

    name: str

    async def prepare(self, opts: Options, api: HttpClient, run_id: str) -> Plan:
        """Create what the run needs through the HTTP API and fix the plan."""

    def driver(self, plan: Plan, rec: Recorder, clients: list[Client]) -> Driver:
        """The worker-side half."""

    def expected(self, plan: Plan, totals: Totals) -> dict[str, int]:
        """Per lane, how many deliveries a lossless server would have made."""

    async def finish(self, plan: Plan, api: HttpClient, totals: Totals) -> dict[str, Any]:
        """Checks after the run and the scenario's own summary fields."""


class Driver:
    """Worker side of a scenario: what one scheduled message does.

    `send` runs as its own task so a slow reply never delays the next send; it records its
    outcome in the recorder and returns nothing.
    """

    parse_pushes = False
    """True when pushes must be decoded (the scenario reads fields beyond the marker)."""
    count_only = False
    """True when connections never send after subscribing: they then skip frame parsing
    and count markers in the raw stream (`loadtest.counting`), sampling latency."""
    lanes: tuple[str, ...] = tuple(markers.LANES.values())
    """Lanes this scenario's markers use (each costs a counting connection one scan per read)."""

    def __init__(self, plan: Plan, rec: Recorder, clients: list[Client]) -> None:
        self.plan = plan
        self.rec = rec
        self.clients = clients
        """Subscribed connections of this worker, filled before the schedule starts."""
        self._turn = 0

    async def send(self, k: int, due: float) -> None:
        raise NotImplementedError

    def on_push(self, client: Client, push: dict[str, Any], received_us: int) -> None:
        """A decoded push; only called when `parse_pushes` is set."""

    async def close(self) -> None:
        """Release what the driver opened itself."""

    def next_client(self) -> Client | None:
        """Round robin over live connections, so each user sends at rate / connections."""
        for _ in range(len(self.clients)):
            client = self.clients[self._turn % len(self.clients)]
            self._turn += 1
            if client.alive:
                return client
        return None

    async def command(self, client: Client, due: float, op: str, **args: Any) -> dict[str, Any] | None:
        """Run one op; the reply object, or None after counting a timeout or a close."""
        try:
            reply = await client.request(op, **args)
        except ReplyTimeout:
            self.rec.error("timeout")
            return None
        except ConnectionClosed:
            self.rec.error("closed")
            return None
        record_us(self.rec.histograms["ack"], now_us() - due * 1e6)
        return reply


def error_code(reply: dict[str, Any]) -> str | None:
    """The code of an error reply, None for an `ok` one."""
    error = reply.get("error")
    if error is None:
        return None
    return str(error.get("code", "unknown")) if isinstance(error, dict) else "unknown"


async def call(api: HttpClient, method: str, path: str, *, token: str | None = None, json: Any = None) -> Any:
    """A setup request that must succeed; its JSON body."""
    try:
        response: Response = await api.request(method, path, token=token, json=json)
    except HttpError as exc:
        raise SetupError(f"{method} {path}: {exc}") from exc
    if not response.ok:
        body = response.body[:300].decode("utf-8", "replace")
        raise SetupError(f"{method} {path} -> {response.status}: {body}")
    return response.json()


def identifier(body: Any, what: str) -> str | int:
    """The `id` of a created resource, as the server spelled it."""
    value = body.get("id") if isinstance(body, dict) else None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise SetupError(f"created {what} has no id: {body!r}")
    return value


async def limited(coros: Iterable[Awaitable[T]], limit: int = SETUP_CONCURRENCY) -> list[T]:
    """Await all, at most `limit` at a time, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


def user(run_id: str, index: int) -> tuple[str, str]:
    """(user id, display name) of generator user `index`."""
    return f"lt-{run_id}-{index}", f"loadtest {index}"


def token_ttl(opts: Options) -> int:
    """Tokens outlive the whole run, with an hour to spare."""
    return int(opts.ramp + opts.duration + opts.drain) + 3600


async def create_rooms(api: HttpClient, token: str, count: int, run_id: str) -> list[str | int]:
    bodies = await limited(
        call(api, "POST", "/api/rooms", token=token, json={"title": f"loadtest {run_id} #{i}"})
        for i in range(count)
    )
    return [identifier(body, "room") for body in bodies]


def room_members(run_id: str, count: int, rooms: list[str | int]) -> tuple[Member, ...]:
    """`count` users spread round-robin over `rooms`."""
    members = []
    for i in range(count):
        user_id, name = user(run_id, i)
        room = rooms[i % len(rooms)]
        members.append(Member(user_id, name, room, f"room:{room}"))
    return tuple(members)


def plan_for(opts: Options, run_id: str, members: tuple[Member, ...], **fields: Any) -> Plan:
    """A plan with the options every scenario carries, plus the scenario's fields."""
    return Plan(
        scenario=opts.scenario,
        http_url=opts.url,
        ws_url=opts.ws_url,
        protocol=opts.protocol,
        secret=opts.secret,
        api_key=opts.api_key,
        rate=opts.rate,
        duration=opts.duration,
        ramp=opts.ramp,
        drain=opts.drain,
        workers=opts.workers,
        run_id=run_id,
        members=members,
        token_ttl_s=token_ttl(opts),
        **fields,
    )
