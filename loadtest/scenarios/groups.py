"""`groups`: merchant group chats; members send with `group.send` and all members receive.

Besides delivery latency this checks the chat's ordering promise: every member sees a
group's messages in `seq` order without holes, and acknowledged seqs never repeat.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from loadtest import markers
from loadtest.httpclient import HttpClient, HttpError
from loadtest.options import Options
from loadtest.plan import Member, Plan
from loadtest.scenarios import base
from loadtest.stats import Recorder, Totals
from loadtest.summary import fanout_expected
from loadtest.tokens import mint
from loadtest.wsclient import Client

LANE = "message"


class Groups:
    name = "groups"

    async def prepare(self, opts: Options, api: HttpClient, run_id: str) -> Plan:
        ttl = base.token_ttl(opts)
        people = [base.user(run_id, i) for i in range(opts.viewers)]
        tokens = [mint(opts.secret, uid, name, ttl) for uid, name in people]
        # Member g owns group g; member i belongs to group i % groups.
        groups = await base.limited(
            base.call(api, "POST", "/api/groups", token=tokens[g], json={"name": f"lt {run_id} {g}"})
            for g in range(opts.groups)
        )
        ids = [base.identifier(body, "group") for body in groups]
        invites = await base.limited(
            base.call(api, "POST", f"/api/groups/{gid}/invites", token=tokens[g]) for g, gid in enumerate(ids)
        )
        codes = [str(body["code"]) for body in invites]
        joins = await base.limited(
            _join(api, tokens[i], codes[i % opts.groups]) for i in range(opts.groups, opts.viewers)
        )
        refused = [code for code in joins if code is not None]
        members = tuple(
            Member(uid, name, ids[i % opts.groups], f"group:{ids[i % opts.groups]}")
            for i, (uid, name) in enumerate(people)
            if i < opts.groups or joins[i - opts.groups] is None
        )
        setup_errors = {f"join_{code}": refused.count(code) for code in set(refused)}
        return base.plan_for(opts, run_id, members, setup_errors=setup_errors)

    def driver(self, plan: Plan, rec: Recorder, clients: list[Client]) -> base.Driver:
        return Sender(plan, rec, clients)

    def expected(self, plan: Plan, totals: Totals) -> dict[str, int]:
        return fanout_expected(totals.accepted, totals.subscribed)

    async def finish(self, plan: Plan, api: HttpClient, totals: Totals) -> dict[str, Any]:
        return {"groups": len({m.channel for m in plan.members}), "seq": seq_summary(totals)}


async def _join(api: HttpClient, token: str, code: str) -> str | None:
    """None when joined, else the refusal's error code (the member is left out of the run)."""
    try:
        response = await api.request("POST", "/api/groups/join", token=token, json={"code": code})
    except HttpError:
        return "failed"
    return None if response.ok else response.error_code()


def seq_summary(totals: Totals) -> dict[str, Any]:
    """Ordering checks: member-side holes and reorders, and acknowledged seqs per group."""
    acked: defaultdict[str, list[int]] = defaultdict(list)
    for extra in totals.extras:
        for channel, seqs in extra.get("acked", {}).items():
            acked[channel].extend(seqs)
    return seq_fields(acked, totals.counts.get("seq_gaps", 0), totals.counts.get("seq_reordered", 0))


def seq_fields(acked: Mapping[str, list[int]], gaps: int | None, reordered: int | None) -> dict[str, Any]:
    """The `seq` field from acknowledged seqs per channel and the member-side counts
    (None where the driver did not check them: `ok` then rests on the rest)."""
    duplicates = sum(len(seqs) - len(set(seqs)) for seqs in acked.values())
    holes = sum(max(seqs) - min(seqs) + 1 - len(set(seqs)) for seqs in acked.values() if seqs)
    return {
        "gaps": gaps,
        "reordered": reordered,
        "ack_duplicates": duplicates,
        "ack_holes": holes,
        "ok": not any((gaps, reordered, duplicates, holes)),
    }


class Sender(base.Driver):
    parse_pushes = True

    def __init__(self, plan: Plan, rec: Recorder, clients: list[Client]) -> None:
        super().__init__(plan, rec, clients)
        self.acked: defaultdict[str, list[int]] = defaultdict(list)
        rec.extra["acked"] = self.acked
        self.last_seq: dict[int, int] = {}
        """id(client) -> last message seq it received."""

    async def send(self, k: int, due: float) -> None:
        client = self.next_client()
        if client is None:
            self.rec.sent[("", LANE)] += 1
            self.rec.error("no_connection")
            return
        channel = client.member.channel
        self.rec.sent[(channel, LANE)] += 1
        reply = await self.command(
            client,
            due,
            "group.send",
            group=client.member.target,
            text=f"{markers.make(LANE, int(due * 1e6))} message {k}",
            client_msg_id=f"{self.plan.run_id}-{k}",
        )
        if reply is None:
            return
        code = base.error_code(reply)
        seq = reply.get("ok", {}).get("seq") if code is None else None
        if code is not None:
            self.rec.error(code)
        elif not isinstance(seq, int):
            self.rec.error("unexpected_reply")
        else:
            self.rec.accepted[(channel, LANE)] += 1
            self.acked[channel].append(seq)

    def on_push(self, client: Client, push: dict[str, Any], received_us: int) -> None:
        data = push.get("data")
        if push.get("ev") != "message" or not isinstance(data, dict):
            return
        text = data.get("text")
        hit = markers.find(text) if isinstance(text, str) else None
        if hit is None:
            return  # not a message of this run
        self.rec.delivery(hit[0], hit[1], received_us)
        seq = push.get("off")
        if not isinstance(seq, int):
            self.rec.error("push_without_seq")
            return
        last = self.last_seq.get(id(client))
        self.last_seq[id(client)] = max(seq, last) if last is not None else seq
        if last is None or seq == last + 1:
            return
        if seq > last + 1:
            self.rec.counts["seq_gaps"] += seq - last - 1
        else:
            self.rec.counts["seq_reordered"] += 1
