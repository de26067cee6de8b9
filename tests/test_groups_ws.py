"""Group channels over WebSocket against real `livemart serve` processes (PostgreSQL, Redis).

Covers what only a real process shows: pushes with `off` = seq, members-only
subscriptions, kicks that end a live subscription on another process at once, and
catch-up after time offline with correct unread counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from tests.processes import TEST_SECRET, LivemartProcess, ProcessGroup, token
from tests.wsclient import Push, WsClient, WsError

#: Test servers accept commands as fast as the tests send them.
FAST_COMMANDS = {"LIVEMART_COMMAND_RATE": "5000", "LIVEMART_COMMAND_BURST": "5000"}


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, user.title(), TEST_SECRET)}"}


class Api:
    """HTTP calls to one server as a given user."""

    def __init__(self, server: LivemartProcess) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, timeout=10)

    async def ok(self, method: str, path: str, user: str, body: Mapping[str, Any] | None = None) -> Any:
        response = await self.http.request(method, path, headers=bearer(user), json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def group_with(self, owner: str, members: list[str]) -> int:
        group = await self.ok("POST", "/api/groups", owner, {"name": f"{owner}'s group"})
        code = (await self.ok("POST", f"/api/groups/{group['id']}/invites", owner))["code"]
        for start in range(0, len(members), 20):
            await asyncio.gather(
                *(
                    self.ok("POST", "/api/groups/join", user, {"code": code})
                    for user in members[start : start + 20]
                )
            )
        return int(group["id"])

    async def send_many(self, gid: int, user: str, count: int, prefix: str) -> list[int]:
        seqs: list[int] = []
        for start in range(0, count, 25):
            replies = await asyncio.gather(
                *(
                    self.ok(
                        "POST",
                        f"/api/groups/{gid}/messages",
                        user,
                        {"text": f"{prefix}{i}", "client_msg_id": f"{prefix}{i}"},
                    )
                    for i in range(start, min(count, start + 25))
                )
            )
            seqs += [int(r["seq"]) for r in replies]
        return seqs

    async def unread(self, gid: int, user: str) -> int:
        mine = await self.ok("GET", "/api/me/groups", user)
        return int(next(g["unread"] for g in mine["groups"] if g["id"] == gid))

    async def close(self) -> None:
        await self.http.aclose()


def start(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, prefix: str, **env: str
) -> LivemartProcess:
    return livemart.start(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=prefix, env={**FAST_COMMANDS, **env}
    )


async def connect(server: LivemartProcess, user: str | None) -> WsClient:
    return await WsClient.connect(
        server.ws_url, token=None if user is None else token(user, user.title(), TEST_SECRET)
    )


def messages(pushes: list[Push]) -> list[Push]:
    return [p for p in pushes if p["ev"] in ("message", "announcement")]


@pytest.fixture(
    params=["embedded", pytest.param("redis-postgres", marks=[pytest.mark.redis, pytest.mark.postgres])]
)
def any_server(request: pytest.FixtureRequest, livemart: ProcessGroup) -> LivemartProcess:
    """The embedded default (SQLite, in-process broker) and the clustered setup."""
    if request.param == "embedded":
        return livemart.start(env=FAST_COMMANDS)
    return start(
        livemart,
        request.getfixturevalue("postgres_url"),
        request.getfixturevalue("redis_url"),
        request.getfixturevalue("redis_prefix"),
    )


async def test_members_subscribe_and_receive_messages_with_seq_offsets(any_server: LivemartProcess) -> None:
    server = any_server
    api = Api(server)
    gid = await api.group_with("owner", ["ann"])
    await api.send_many(gid, "owner", 3, "before")
    owner, ann = await connect(server, "owner"), await connect(server, "ann")
    try:
        reply = await ann.call("subscribe", ch=f"group:{gid}")
        assert reply["off"] == 3 and reply["epoch"] and reply["recovered"] is False
        state = reply["state"]
        assert (state["name"], state["members"], state["last_seq"], state["unread"]) == (
            "owner's group",
            2,
            3,
            3,
        )
        await owner.call("subscribe", ch=f"group:{gid}")
        assert await owner.call("group.send", group=gid, text="hello", client_msg_id="h1") == {"seq": 4}
        assert await ann.call("group.send", group=str(gid), text="hi!", client_msg_id="h2") == {"seq": 5}
        # A retried send is answered with the first seq and published once.
        assert await ann.call("group.send", group=gid, text="hi!", client_msg_id="h2") == {"seq": 5}
        await api.ok("POST", f"/api/groups/{gid}/announcements", "owner", {"text": "Sale at 8"})
        got = await ann.pushes_until(lambda p: p["ev"] == "announcement")
        assert [(p["ev"], p["off"], p["data"]["text"]) for p in got] == [
            ("message", 4, "hello"),
            ("message", 5, "hi!"),
            ("announcement", 6, "Sale at 8"),
        ]
        assert {k: got[0]["data"][k] for k in ("seq", "user_id", "name", "kind", "ref")} == {
            "seq": 4,
            "user_id": "owner",
            "name": "Owner",
            "kind": "text",
            "ref": None,
        }
        # Membership events reach subscribers live.
        code = (await api.ok("POST", f"/api/groups/{gid}/invites", "owner"))["code"]
        await api.ok("POST", "/api/groups/join", "bob", {"code": code})
        joined = await owner.pushes_until(lambda p: p["ev"] == "member.join")
        assert joined[-1]["data"] == {"user_id": "bob", "name": "Bob"}
        assert await ann.call("group.read", group=gid, seq=6) == {"unread": 0}
        assert await ann.call("group.recall", group=gid, seq=5) == {"seq": 7}
        recall = (await owner.pushes_until(lambda p: p["off"] == 7))[-1]
        assert (recall["ev"], recall["data"]["kind"], recall["data"]["ref"]) == (
            "message",
            "recall",
            {"seq": 5},
        )
        # A room card carries the live room's current status, live and in history.
        room = await api.ok("POST", "/api/rooms", "owner", {"title": "Tea tasting"})
        card = {"text": "", "client_msg_id": "card", "kind": "room_card", "ref": {"room_id": room["id"]}}
        assert await owner.call("group.send", group=gid, **card) == {"seq": 8}
        pushed = (await ann.pushes_until(lambda p: p["off"] == 8))[-1]["data"]["ref"]
        expected = {"room_id": str(room["id"]), "status": "offline", "title": "Tea tasting"}
        assert pushed == expected
        page = await api.ok("GET", f"/api/groups/{gid}/messages?after=7", "ann")
        assert page["messages"][0]["ref"] == expected
        with pytest.raises(WsError) as info:
            await owner.call("group.send", group=gid, **{**card, "ref": "999999", "client_msg_id": "c2"})
        assert info.value.code == "not_found"
    finally:
        await owner.close()
        await ann.close()
        await api.close()


async def test_non_members_are_refused_on_every_ws_path(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    server = start(livemart, postgres_url, redis_url, redis_prefix)
    api = Api(server)
    gid = await api.group_with("owner", ["ann"])
    await api.send_many(gid, "ann", 2, "secret")
    guest, stranger = await connect(server, None), await connect(server, "stranger")
    try:
        for client in (guest, stranger):
            for channel in (f"group:{gid}", "group:999999", "group:abc"):
                with pytest.raises(WsError) as info:
                    await client.call("subscribe", ch=channel)
                assert info.value.code == "not_member", channel
            with pytest.raises(WsError) as info:
                await client.call("subscribe", ch=f"group:{gid}", since={"off": 0, "epoch": "x"})
            assert info.value.code == "not_member"
        for op, args in (
            ("group.send", {"text": "hi", "client_msg_id": "s1"}),
            ("group.read", {"seq": 1}),
            ("group.recall", {"seq": 1}),
            ("group.announce", {"text": "hi"}),
        ):
            with pytest.raises(WsError) as info:
                await stranger.call(op, group=gid, **args)
            assert info.value.code == "not_member", op
            with pytest.raises(WsError) as info:
                await guest.call(op, group=gid, **args)
            assert info.value.code == "unauthorized", op
        assert stranger.pushes.empty() and guest.pushes.empty()
    finally:
        await guest.close()
        await stranger.close()
        await api.close()


async def test_kicked_member_loses_the_live_subscription_on_another_process(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    one = start(livemart, postgres_url, redis_url, redis_prefix)
    two = start(livemart, postgres_url, redis_url, redis_prefix)
    api = Api(one)
    gid = await api.group_with("owner", ["mia", "max"])
    mia, max_ = await connect(two, "mia"), await connect(two, "max")
    try:
        await mia.call("subscribe", ch=f"group:{gid}")
        await max_.call("subscribe", ch=f"group:{gid}")
        await api.ok("DELETE", f"/api/groups/{gid}/members/mia", "owner")
        ended = await mia.next_push(timeout=2)
        assert (ended["ch"], ended["ev"], ended["data"]["code"]) == (
            f"group:{gid}",
            "unsubscribe",
            "not_member",
        )
        left = (await max_.pushes_until(lambda p: p["ev"] == "member.leave"))[-1]
        assert left["data"] == {"user_id": "mia", "kicked": True}
        await api.send_many(gid, "owner", 1, "after-kick")
        assert (await max_.next_push())["data"]["text"] == "after-kick0"
        await asyncio.sleep(0.3)  # give a wrongly delivered push time to arrive
        assert mia.pushes.empty()
        for op, args in (
            ("subscribe", {"ch": f"group:{gid}"}),
            ("group.send", {"group": gid, "text": "let me in", "client_msg_id": "k1"}),
            ("group.read", {"group": gid, "seq": 1}),
        ):
            with pytest.raises(WsError) as info:
                await mia.call(op, **args)
            assert info.value.code == "not_member", op
    finally:
        await mia.close()
        await max_.close()
        await api.close()


async def test_offline_member_catches_up_exactly_and_unread_is_right(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    server = start(livemart, postgres_url, redis_url, redis_prefix)
    api = Api(server)
    gid = await api.group_with("owner", ["ann", "bob"])
    ann = await connect(server, "ann")
    reply = await ann.call("subscribe", ch=f"group:{gid}")
    await api.send_many(gid, "bob", 10, "seen")
    seen = await ann.pushes_until(10)
    assert [p["off"] for p in seen] == list(range(1, 11))
    assert await ann.call("group.read", group=gid, seq=10) == {"unread": 0}
    position = {"off": seen[-1]["off"], "epoch": reply["epoch"]}
    await ann.close()

    sent = await api.send_many(gid, "bob", 500, "offline")
    assert sorted(sent) == list(range(11, 511))
    assert await api.unread(gid, "ann") == 500
    ann = await connect(server, "ann")
    try:
        again = await ann.call("subscribe", ch=f"group:{gid}", since=position)
        assert again["recovered"] is True and again["off"] == 510 and again["state"]["unread"] == 500
        missed = again["missed"]
        assert [p["off"] for p in missed] == list(range(11, 511))
        text_of = {seq: f"offline{i}" for i, seq in enumerate(sent)}
        assert [p["data"]["text"] for p in missed] == [text_of[seq] for seq in range(11, 511)]
        assert {p["ch"] for p in missed} == {f"group:{gid}"} and {p["ev"] for p in missed} == {"message"}
        # Live pushes continue right after the recovered ones.
        await api.send_many(gid, "bob", 1, "live")
        assert (await ann.next_push())["off"] == 511
        assert await api.unread(gid, "ann") == 501
        assert await ann.call("group.read", group=gid, seq=511) == {"unread": 0}
        assert await api.unread(gid, "ann") == 0
    finally:
        await ann.close()
        await api.close()


async def test_too_long_a_gap_says_so_and_history_fills_it(
    livemart: ProcessGroup, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    server = start(livemart, postgres_url, redis_url, redis_prefix, LIVEMART_GROUPS_RECOVERY_LIMIT="5")
    api = Api(server)
    gid = await api.group_with("owner", ["ann"])
    first = await connect(server, "ann")
    epoch = (await first.call("subscribe", ch=f"group:{gid}"))["epoch"]
    await first.close()
    await api.send_many(gid, "owner", 6, "m")

    async def resume(since: dict[str, Any]) -> dict[str, Any]:
        client = await connect(server, "ann")
        try:
            return await client.call("subscribe", ch=f"group:{gid}", since=since)
        finally:
            await client.close()

    try:
        reply = await resume({"off": 0, "epoch": epoch})
        assert (reply["recovered"], reply["missed"], reply["off"]) == (False, [], 6)
        reply = await resume({"off": 1, "epoch": epoch})
        assert reply["recovered"] is True and [p["off"] for p in reply["missed"]] == [2, 3, 4, 5, 6]
        reply = await resume({"off": 1, "epoch": "other"})
        assert (reply["recovered"], reply["missed"]) == (False, [])
        page = await api.ok("GET", f"/api/groups/{gid}/messages?after=0&limit=4", "ann")
        rest = await api.ok("GET", f"/api/groups/{gid}/messages?after=4&limit=4", "ann")
        assert [m["seq"] for m in page["messages"] + rest["messages"]] == [1, 2, 3, 4, 5, 6]
        assert (page["more"], rest["more"]) == (True, False)
    finally:
        await api.close()
