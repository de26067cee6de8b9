"""Group chats through the HTTP API, in-process, on SQLite and PostgreSQL.

Two cores on one database stand in for two processes where only the database is
shared (the write path's seq assignment); WebSocket behaviour is tested against real
processes in test_groups_ws.py and test_groups_cluster.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from realtime.config import Settings
from realtime.server import Core
from rooms.groups import GroupChats, GroupSettings
from rooms.groups.tables import invites, messages

SECRET = "groups-api-test-secret-0123456789abcdef"


@dataclass(frozen=True)
class FakeRoom:
    title: str
    status: str


class FakeRooms:
    """Live rooms as group chats see them: a lookup by id."""

    def __init__(self, rooms: Mapping[str, FakeRoom]) -> None:
        self.rooms = rooms

    async def room(self, room_id: str) -> FakeRoom | None:
        return self.rooms.get(room_id)


@dataclass
class Server:
    core: Core
    chats: GroupChats
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = (
            {}
            if user is None
            else {"Authorization": f"Bearer {self.core.tokens.issue(user, name=user.title())}"}
        )
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> Any:
        response = await self.call(method, path, user, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def error(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> tuple[int, str]:
        response = await self.call(method, path, user, **kwargs)
        assert response.status_code >= 400, response.text
        return response.status_code, response.json()["error"]["code"]

    async def group_with(self, owner: str, *others: str) -> int:
        group = await self.ok("POST", "/api/groups", owner, json={"name": f"{owner}'s group"})
        code = (await self.ok("POST", f"/api/groups/{group['id']}/invites", owner))["code"]
        for user in others:
            await self.ok("POST", "/api/groups/join", user, json={"code": code})
        return int(group["id"])

    async def send(self, group_id: int, user: str, text: str, client_msg_id: str, **extra: Any) -> int:
        body = {"text": text, "client_msg_id": client_msg_id, **extra}
        reply = await self.ok("POST", f"/api/groups/{group_id}/messages", user, json=body)
        return int(reply["seq"])

    async def history(self, group_id: int, user: str, after: int = 0, limit: int = 500) -> dict[str, Any]:
        page: dict[str, Any] = await self.ok(
            "GET", f"/api/groups/{group_id}/messages?after={after}&limit={limit}", user
        )
        return page


@asynccontextmanager
async def running(
    database_url: str,
    settings: GroupSettings | None = None,
    *,
    rooms: FakeRooms | None = None,
    migrate: bool = True,
) -> AsyncIterator[Server]:
    core = Core(Settings(database_url=database_url, secret=SECRET))
    chats = GroupChats(core, rooms=rooms, settings=settings or GroupSettings())
    app = core.asgi_app([chats])
    if migrate:
        await core.migrate([chats])
    await core.broker.start()
    await chats.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield Server(core, chats, http)
    finally:
        await chats.stop()
        await core.broker.close()
        await core.db.close()


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Server]:
    async with running(database_url) as server:
        yield server


async def test_create_invite_join_and_list(server: Server) -> None:
    group = await server.ok("POST", "/api/groups", "owner", json={"name": "VIP buyers"})
    assert group["role"] == "owner" and group["members"] == 1 and group["last_seq"] == 0
    gid = group["id"]
    invite = await server.ok("POST", f"/api/groups/{gid}/invites", "owner", json={"max_uses": 5})
    joined = await server.ok("POST", "/api/groups/join", "ann", json={"code": invite["code"]})
    assert (joined["id"], joined["role"], joined["members"], joined["unread"]) == (gid, "member", 2, 0)
    # Joining again changes nothing and uses up nothing.
    again = await server.ok("POST", "/api/groups/join", "ann", json={"code": invite["code"]})
    assert again["members"] == 2
    async with server.core.db.begin() as conn:
        uses = (await conn.execute(sa.select(invites.c.uses))).scalar_one()
    assert uses == 1
    listed = await server.ok("GET", f"/api/groups/{gid}/members", "ann")
    assert [(m["user_id"], m["role"]) for m in listed["members"]] == [("owner", "owner"), ("ann", "member")]
    mine = await server.ok("GET", "/api/me/groups", "ann")
    assert [(g["id"], g["name"], g["unread"]) for g in mine["groups"]] == [(gid, "VIP buyers", 0)]
    assert await server.chats.role(gid, "ann") == "member"
    assert await server.chats.role(str(gid), "owner") == "owner"
    assert await server.chats.role(gid, "stranger") is None


async def test_invite_expiry_max_uses_and_revocation(server: Server) -> None:
    gid = await server.group_with("owner", "ann")
    once = (await server.ok("POST", f"/api/groups/{gid}/invites", "owner", json={"max_uses": 1}))["code"]
    await server.ok("POST", "/api/groups/join", "bob", json={"code": once})
    assert await server.error("POST", "/api/groups/join", "cid", json={"code": once}) == (410, "expired")

    old = (await server.ok("POST", f"/api/groups/{gid}/invites", "owner"))["code"]
    async with server.core.db.begin() as conn:
        await conn.execute(sa.update(invites).where(invites.c.code == old).values(expires_at=time.time() - 1))
    assert await server.error("POST", "/api/groups/join", "cid", json={"code": old}) == (410, "expired")

    revoked = (await server.ok("POST", f"/api/groups/{gid}/invites", "owner"))["code"]
    await server.ok("DELETE", f"/api/groups/{gid}/invites/{revoked}", "owner")
    assert await server.error("POST", "/api/groups/join", "cid", json={"code": revoked}) == (410, "expired")
    assert await server.error("POST", "/api/groups/join", "cid", json={"code": "nope"}) == (404, "not_found")

    # Only managers hand out or revoke invites.
    assert await server.error("POST", f"/api/groups/{gid}/invites", "ann") == (403, "forbidden")
    fresh = (await server.ok("POST", f"/api/groups/{gid}/invites", "owner"))["code"]
    assert await server.error("DELETE", f"/api/groups/{gid}/invites/{fresh}", "ann") == (403, "forbidden")


async def test_member_cap_holds_under_concurrent_joins(database_url: str) -> None:
    async with running(database_url, GroupSettings(member_cap=5)) as server:
        group = await server.ok("POST", "/api/groups", "owner", json={"name": "small"})
        gid = group["id"]
        code = (await server.ok("POST", f"/api/groups/{gid}/invites", "owner"))["code"]
        replies = await asyncio.gather(
            *(server.call("POST", "/api/groups/join", f"u{i}", json={"code": code}) for i in range(12))
        )
        statuses = sorted(r.status_code for r in replies)
        assert statuses == [200] * 4 + [409] * 8
        assert {r.json()["error"]["code"] for r in replies if r.status_code == 409} == {"limit_exceeded"}
        view = await server.ok("GET", f"/api/groups/{gid}", "owner")
        assert view["members"] == 5
        assert len((await server.ok("GET", f"/api/groups/{gid}/members", "owner"))["members"]) == 5
        # A leave frees a place.
        joined = next(r for r in replies if r.status_code == 200).json()
        member = next(
            m["user_id"]
            for m in (await server.ok("GET", f"/api/groups/{gid}/members", "owner"))["members"]
            if m["role"] == "member"
        )
        assert joined["members"] >= 2
        await server.ok("DELETE", f"/api/groups/{gid}/members/{member}", member)
        await server.ok("POST", "/api/groups/join", "late", json={"code": code})


async def test_roles_and_kicks_follow_rank(server: Server) -> None:
    gid = await server.group_with("owner", "adam", "amy", "mia", "max")
    base = f"/api/groups/{gid}/members"
    await server.ok("POST", f"{base}/adam/role", "owner", json={"role": "admin"})
    await server.ok("POST", f"{base}/amy/role", "owner", json={"role": "admin"})
    assert await server.error("POST", f"{base}/mia/role", "adam", json={"role": "admin"}) == (
        403,
        "forbidden",
    )
    assert await server.error("DELETE", f"{base}/amy", "adam") == (403, "forbidden")
    assert await server.error("DELETE", f"{base}/owner", "adam") == (403, "forbidden")
    assert await server.error("DELETE", f"{base}/max", "mia") == (403, "forbidden")
    assert await server.error("DELETE", f"{base}/owner", "owner") == (403, "forbidden")
    await server.ok("DELETE", f"{base}/mia", "adam")  # admin kicks a member
    await server.ok("DELETE", f"{base}/amy", "owner")  # owner kicks an admin
    await server.ok("DELETE", f"{base}/max", "max")  # leave
    listed = await server.ok("GET", base, "owner")
    assert sorted(m["user_id"] for m in listed["members"]) == ["adam", "owner"]
    assert (await server.ok("GET", f"/api/groups/{gid}", "owner"))["members"] == 2


async def test_mutes(server: Server) -> None:
    gid = await server.group_with("owner", "adam", "mia")
    await server.ok("POST", f"/api/groups/{gid}/members/adam/role", "owner", json={"role": "admin"})
    path = f"/api/groups/{gid}/messages"
    await server.ok("POST", f"/api/groups/{gid}/members/mia/mute", "adam", json={"seconds": 60})
    assert await server.error("POST", path, "mia", json={"text": "hi", "client_msg_id": "1"}) == (
        403,
        "muted",
    )
    assert await server.error("POST", f"/api/groups/{gid}/members/adam/mute", "mia", json={"seconds": 9}) == (
        403,
        "forbidden",
    )
    await server.ok("POST", f"/api/groups/{gid}/members/mia/mute", "adam", json={"seconds": 0})
    await server.send(gid, "mia", "hi", "2")

    assert await server.error("POST", f"/api/groups/{gid}/mute-all", "mia", json={"muted": True}) == (
        403,
        "forbidden",
    )
    await server.ok("POST", f"/api/groups/{gid}/mute-all", "adam", json={"muted": True})
    assert await server.error("POST", path, "mia", json={"text": "hi", "client_msg_id": "3"}) == (
        403,
        "muted",
    )
    await server.send(gid, "adam", "admins may talk", "4")
    await server.ok("POST", f"/api/groups/{gid}/mute-all", "owner", json={"muted": False})
    await server.send(gid, "mia", "back", "5")
    assert [m["text"] for m in (await server.history(gid, "owner"))["messages"]] == [
        "hi",
        "admins may talk",
        "back",
    ]


async def test_sends_are_idempotent_and_history_pages_in_order(server: Server) -> None:
    gid = await server.group_with("owner", "ann")
    seqs = [await server.send(gid, "ann", f"m{i}", f"c{i}") for i in range(30)]
    assert seqs == list(range(1, 31))
    retry = await server.call(
        "POST", f"/api/groups/{gid}/messages", "ann", json={"text": "m3", "client_msg_id": "c3"}
    )
    assert (retry.status_code, retry.json()) == (200, {"seq": 4})
    # The same client_msg_id from another sender is another message.
    assert await server.send(gid, "owner", "mine", "c3") == 31
    page = await server.history(gid, "owner", after=10, limit=5)
    assert [m["seq"] for m in page["messages"]] == [11, 12, 13, 14, 15]
    assert page["more"] is True and page["last_seq"] == 31
    first = page["messages"][0]
    assert {k: first[k] for k in ("user_id", "name", "text", "kind", "ref", "recalled")} == {
        "user_id": "ann",
        "name": "Ann",
        "text": "m10",
        "kind": "text",
        "ref": None,
        "recalled": False,
    }
    everything = await server.history(gid, "ann")
    assert [m["seq"] for m in everything["messages"]] == list(range(1, 32)) and everything["more"] is False


async def test_recall_is_a_tombstone_with_a_new_seq(database_url: str) -> None:
    async with running(database_url, GroupSettings(recall_window_s=60)) as server:
        gid = await server.group_with("owner", "adam", "mia", "max")
        await server.ok("POST", f"/api/groups/{gid}/members/adam/role", "owner", json={"role": "admin"})
        first = await server.send(gid, "mia", "oops", "1")
        second = await server.send(gid, "mia", "spam", "2")
        owners = await server.send(gid, "owner", "from the owner", "3")
        recall = await server.ok("DELETE", f"/api/groups/{gid}/messages/{first}", "mia")
        assert recall == {"seq": 4}
        assert await server.ok("DELETE", f"/api/groups/{gid}/messages/{first}", "mia") == {"seq": 4}
        assert await server.error("DELETE", f"/api/groups/{gid}/messages/{second}", "max") == (
            403,
            "forbidden",
        )
        assert await server.ok("DELETE", f"/api/groups/{gid}/messages/{second}", "adam") == {"seq": 5}
        assert await server.error("DELETE", f"/api/groups/{gid}/messages/{owners}", "adam") == (
            403,
            "forbidden",
        )
        assert await server.error("DELETE", f"/api/groups/{gid}/messages/4", "owner") == (400, "bad_request")
        assert await server.error("DELETE", f"/api/groups/{gid}/messages/99", "owner") == (404, "not_found")
        async with server.core.db.begin() as conn:
            await conn.execute(
                sa.update(messages).where(messages.c.seq == owners).values(created_at=time.time() - 61)
            )
        assert await server.error("DELETE", f"/api/groups/{gid}/messages/{owners}", "owner") == (
            410,
            "expired",
        )
        page = (await server.history(gid, "max"))["messages"]
        assert [(m["seq"], m["kind"], m["text"], m["recalled"]) for m in page] == [
            (1, "text", "", True),
            (2, "text", "", True),
            (3, "text", "from the owner", False),
            (4, "recall", "", False),
            (5, "recall", "", False),
        ]
        assert page[3]["ref"] == {"seq": 1} and page[4]["user_id"] == "adam"


async def test_announcements_are_durable_and_for_managers(server: Server) -> None:
    gid = await server.group_with("owner", "ann")
    path = f"/api/groups/{gid}/announcements"
    assert await server.error("POST", path, "ann", json={"text": "hello"}) == (403, "forbidden")
    assert (await server.ok("POST", path, "owner", json={"text": "Sale at 8pm", "client_msg_id": "a1"}))[
        "seq"
    ] == 1
    assert (await server.ok("POST", path, "owner", json={"text": "Sale at 8pm", "client_msg_id": "a1"}))[
        "seq"
    ] == 1
    page = (await server.history(gid, "ann"))["messages"]
    assert [(m["seq"], m["kind"], m["text"]) for m in page] == [(1, "announcement", "Sale at 8pm")]


async def test_unread_counts_follow_the_read_cursor(server: Server) -> None:
    gid = await server.group_with("owner", "ann")
    for i in range(5):
        await server.send(gid, "owner", f"m{i}", f"c{i}")

    async def unread(user: str) -> int:
        mine = await server.ok("GET", "/api/me/groups", user)
        return int(next(g["unread"] for g in mine["groups"] if g["id"] == gid))

    assert (await unread("ann"), await unread("owner")) == (5, 0)
    read = f"/api/groups/{gid}/read"
    assert await server.ok("POST", read, "ann", json={"seq": 3}) == {"unread": 2}
    assert await server.ok("POST", read, "ann", json={"seq": 1}) == {"unread": 2}  # never backwards
    assert await unread("ann") == 2
    assert await server.ok("POST", read, "ann", json={"seq": 10_000}) == {"unread": 0}  # clamped
    await server.send(gid, "owner", "one more", "c5")
    assert await unread("ann") == 1
    # Writing marks the writer's own message read.
    await server.send(gid, "ann", "thanks", "a1")
    assert await unread("ann") == 0


async def test_non_members_and_guests_are_refused_everywhere(server: Server) -> None:
    gid = await server.group_with("owner", "ann")
    await server.send(gid, "ann", "secret", "1")
    g = f"/api/groups/{gid}"
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", g, None),
        ("GET", f"{g}/members", None),
        ("GET", f"{g}/messages?after=0", None),
        ("POST", f"{g}/messages", {"text": "hi", "client_msg_id": "x"}),
        ("POST", f"{g}/read", {"seq": 1}),
        ("POST", f"{g}/invites", {}),
        ("DELETE", f"{g}/messages/1", None),
        ("POST", f"{g}/announcements", {"text": "hi"}),
        ("POST", f"{g}/mute-all", {"muted": True}),
        ("DELETE", f"{g}/members/ann", None),
    ]
    for method, path, body in requests:
        assert await server.error(method, path, "stranger", json=body) == (403, "not_member"), path
        assert (await server.error(method, path, None, json=body))[0] == 401, path
    # A group that does not exist looks the same as one you are not in.
    assert await server.error("GET", "/api/groups/999999/messages", "stranger") == (403, "not_member")
    # A kicked member is a stranger from then on.
    await server.ok("DELETE", f"{g}/members/ann", "owner")
    for method, path, body in requests[:5]:
        assert await server.error(method, path, "ann", json=body) == (403, "not_member"), path
    assert (await server.ok("GET", "/api/me/groups", "ann"))["groups"] == []


async def test_bad_input_is_refused(server: Server) -> None:
    gid = await server.group_with("owner")
    path = f"/api/groups/{gid}/messages"
    assert await server.error("POST", path, "owner", json={"text": "x" * 2001, "client_msg_id": "1"}) == (
        413,
        "too_large",
    )
    assert await server.error("POST", path, "owner", json={"text": "hi"}) == (400, "bad_request")
    assert await server.error("POST", path, "owner", json={"text": "", "client_msg_id": "1"}) == (
        400,
        "bad_request",
    )
    bad_kind = {"text": "hi", "client_msg_id": "1", "kind": "video"}
    assert await server.error("POST", path, "owner", json=bad_kind) == (400, "bad_request")
    assert await server.error("GET", f"{path}?limit=0", "owner") == (400, "bad_request")
    assert await server.error("POST", "/api/groups", "owner", json={"name": "   "}) == (400, "bad_request")


async def test_cards_carry_their_reference_and_the_room_status(database_url: str) -> None:
    rooms = FakeRooms({"7": FakeRoom("Tea tasting", "live")})
    async with running(database_url, rooms=rooms) as server:
        gid = await server.group_with("owner", "ann")
        path = f"/api/groups/{gid}/messages"
        missing = {"text": "", "client_msg_id": "r0", "kind": "room_card", "ref": "8"}
        assert await server.error("POST", path, "ann", json=missing) == (404, "not_found")
        await server.send(gid, "owner", "Join us", "r1", kind="room_card", ref={"room_id": 7})
        await server.send(gid, "owner", "", "s1", kind="sale_card", ref="55")
        page = (await server.history(gid, "ann"))["messages"]
        assert page[0]["ref"] == {"room_id": "7", "status": "live", "title": "Tea tasting"}
        assert (page[1]["kind"], page[1]["ref"]) == ("sale_card", {"sale_id": "55"})


async def test_two_processes_sharing_the_database_assign_gap_free_seqs(database_url: str) -> None:
    """Concurrent senders on two cores, three groups, and retries racing their originals."""
    async with running(database_url) as one, running(database_url, migrate=False) as two:
        users = [f"u{i}" for i in range(10)]
        gids = [await one.group_with("owner", *users) for _ in range(3)]
        rng = random.Random(5)
        plan = [(rng.choice(gids), users[i % 10], f"{i}") for i in range(300)]

        async def send(server: Server, gid: int, user: str, cid: str) -> tuple[int, str, int]:
            seq = await server.send(gid, user, f"text {cid}", cid)
            return gid, cid, seq

        jobs = [send(one if i % 2 else two, *step) for i, step in enumerate(plan)]
        # Every 10th send is retried on the other core at the same time.
        jobs += [send(two if i % 2 else one, *plan[i]) for i in range(0, 300, 10)]
        results = await asyncio.gather(*jobs)
        by_message: dict[tuple[int, str], set[int]] = {}
        for gid, cid, seq in results:
            by_message.setdefault((gid, cid), set()).add(seq)
        assert all(len(seqs) == 1 for seqs in by_message.values()), "a retry got a second seq"
        for gid in gids:
            seqs = sorted(s for (g, _), ss in by_message.items() if g == gid for s in ss)
            assert seqs == list(range(1, len(seqs) + 1))
            page = await two.history(gid, "owner")
            assert [m["seq"] for m in page["messages"]] == seqs and page["last_seq"] == len(seqs)


async def test_one_bad_message_does_not_fail_the_batch_it_would_share(server: Server) -> None:
    """PostgreSQL text cannot hold NUL: such a message is refused before it is queued."""
    gid = await server.group_with("owner", "ann", "bob")
    path = f"/api/groups/{gid}/messages"
    bodies = [("ann", {"text": f"fine {i}", "client_msg_id": f"a{i}"}) for i in range(10)]
    bodies.insert(5, ("bob", {"text": "bad\x00text", "client_msg_id": "b1"}))
    bodies.insert(7, ("bob", {"text": "ok", "client_msg_id": "b\x002"}))
    replies = await asyncio.gather(*(server.call("POST", path, user, json=body) for user, body in bodies))
    codes = [r.status_code for r in replies]
    assert codes.count(201) == 10 and codes.count(400) == 2
    assert [m["text"] for m in (await server.history(gid, "owner"))["messages"]] == [
        f"fine {i}" for i in range(10)
    ]
