"""`livemart loadtest flashsale|groups --driver native`: one wsdrive process does the sending.

The scenario's setup (sale or groups, members, tokens) and its final checks stay those of
the Python scenario; only the socket work moves to the C driver, which keeps a server at
tens of thousands of commands a second busy from one core. The driver's JSON result and
the ok replies it keeps are turned into the same summary line as the Python path's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from loadtest import native, summary
from loadtest.options import Options
from loadtest.plan import Plan
from loadtest.runner import emit, prepare, with_api
from loadtest.scenarios import flashsale, groups
from loadtest.tokens import mint

SUBSCRIBE = '{"id":%ID%,"op":"subscribe","ch":"KIND:%ARG%"}'
"""Each connection joins its member's room or group, as a Python worker does; %ARG% is the
member's room or group id (line i of --args for connection i)."""
RESERVE = '{"id":%ID%,"op":"reserve","sale":SALE,"quantity":1,"key":"%KEY%"}'
"""%KEY% is `<run id>-<k>`, the Python path's idempotency key."""
GROUP_SEND = (
    '{"id":%ID%,"op":"group.send","group":"%ARG%","text":"[lt:m:%DUE%] message %SEQ%",'
    '"client_msg_id":"%KEY%"}'
)
"""The marker carries the due time, so delivery latency runs from it as on the Python path."""
Granted = list[tuple[int, dict[str, Any]]]
"""The ok replies wsdrive kept: (connection index, the reply's `ok` body)."""
OPEN_BUDGET_S = 60.0
"""Time for the driver to open its connections, on top of sending and drain."""


def run(opts: Options) -> int:
    """Build the driver, set up as the Python scenario does, drive, check, report."""
    try:
        native.build()
    except native.BuildError as exc:
        print(f"loadtest: --driver native: {exc}", file=sys.stderr)
        return 1
    plan = prepare(opts)
    if plan is None:
        return 1
    progress = Progress(opts.scenario, sys.stderr.isatty())
    try:
        result, granted = drive(plan, progress.line)
    except KeyboardInterrupt:
        print("\nloadtest: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError) as exc:
        progress.end()
        print(f"loadtest: wsdrive failed: {exc}; last output: {' | '.join(progress.tail)}", file=sys.stderr)
        return 1
    progress.end()
    if plan.scenario == "flashsale":
        left = asyncio.run(with_api(opts.url, lambda api: flashsale.remaining(api, plan)))
        line = flashsale_summary(plan, result, granted, left)
    else:
        line = groups_summary(plan, result, granted)
    emit(line, opts)
    if opts.plot_path:
        print(
            f"loadtest: no plot written to {opts.plot_path}: the plot draws per-second series that "
            "--driver native does not record; use --driver python for a plot",
            file=sys.stderr,
        )
    return 0


class Progress:
    """wsdrive's once-a-second stderr lines as one self-rewriting line on a terminal."""

    def __init__(self, scenario: str, enabled: bool) -> None:
        self.scenario = scenario
        self.enabled = enabled
        self.tail: list[str] = []
        """The last lines, for an error message if the driver fails."""

    def line(self, text: str) -> None:
        text = text.strip().removeprefix("wsdrive: ")
        self.tail = [*self.tail[-4:], text]
        if self.enabled:
            sys.stderr.write(f"\r{self.scenario} (native): {text}  ")
            sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def drive(plan: Plan, log: Callable[[str], object]) -> tuple[dict[str, Any], Granted]:
    """Run wsdrive for the plan: its result and the ok replies."""
    with tempfile.TemporaryDirectory(prefix="livemart-wsdrive-") as tmp:
        tokens, args, granted = Path(tmp) / "tokens", Path(tmp) / "args", Path(tmp) / "granted"
        tokens.write_text(
            "".join(mint(plan.secret, m.user_id, m.name, plan.token_ttl_s) + "\n" for m in plan.members)
        )
        args.write_text("".join(_text(str(m.target)) + "\n" for m in plan.members))
        command = [
            "--url", plan.ws_url, "--conns", str(len(plan.members)), "--tokens", str(tokens),
            "--args", str(args), "--key-prefix", plan.run_id,
            "--rate", str(plan.rate), "--duration", str(plan.duration), "--drain", str(plan.drain),
            "--ok-file", str(granted), "--ok-conn", *scenario_args(plan),
        ]  # fmt: skip
        timeout = plan.duration + plan.drain + OPEN_BUDGET_S + len(plan.members) / 100
        result = native.command(command, timeout_s=timeout, log=log)
        return result, [_granted(line) for line in granted.read_text().splitlines()]


def scenario_args(plan: Plan) -> list[str]:
    """The join and command templates (and, for groups, how many pushes an ok reply owes)."""
    if plan.scenario == "flashsale":
        sale = orjson.dumps(plan.sale_id).decode()
        return ["--setup", SUBSCRIBE.replace("KIND", "room"), "--template", RESERVE.replace("SALE", sale)]
    # A group message is owed to every member of its group: the drain waits for the largest
    # group's share per ok reply (exact when the groups are the same size).
    largest = max(Counter(m.channel for m in plan.members).values())
    subscribe = SUBSCRIBE.replace("KIND", "group")
    return ["--setup", subscribe, "--template", GROUP_SEND, "--markers-per-ok", str(largest)]


def _text(value: str) -> str:
    """A value as it may stand inside a JSON string in a template."""
    return orjson.dumps(value).decode()[1:-1]


def _granted(line: str) -> tuple[int, dict[str, Any]]:
    conn, _, reply = line.partition("\t")
    ok = orjson.loads(reply).get("ok")
    return int(conn), ok if isinstance(ok, dict) else {}


def flashsale_summary(
    plan: Plan, result: Mapping[str, Any], granted: Granted, left: int | None
) -> dict[str, Any]:
    """Replies are the deliveries; holds are credited to the buyer whose connection got them."""
    errors = driver_errors(plan, result, expected=flashsale.OUTCOMES)
    held: Counter[str] = Counter()
    for conn, ok in granted:
        if ok.get("status") == "held":
            held[plan.members[conn].user_id] += int(ok.get("quantity", 1))
        else:
            errors["unexpected_reply"] += 1
    sent = sent_of(result)
    line = contract(
        plan,
        result,
        errors,
        sent=sent,
        delivered=result["replied"],
        delivered_per_s=result["replied_per_s"],
        expected=sent,
        latency=result["latency_ms"],
        sample={"every": 1, "samples": result["replied"]},
        lane=flashsale.LANE,
    )
    attempts = summary.per_s(sent, result["duration_s"])
    return line | flashsale.sale_fields(plan, held, attempts, result["outcomes"], left)


def groups_summary(plan: Plan, result: Mapping[str, Any], granted: Granted) -> dict[str, Any]:
    """Each acknowledged message is owed to every member of its group; pushes are counted by
    marker. Acked seqs are checked per group; member-side order is not (wsdrive does not
    decode pushes), so `seq.gaps` and `seq.reordered` are null."""
    errors = driver_errors(plan, result)
    acked: defaultdict[str, list[int]] = defaultdict(list)
    for conn, ok in granted:
        seq = ok.get("seq")
        if isinstance(seq, int):
            acked[plan.members[conn].channel].append(seq)
        else:
            errors["unexpected_reply"] += 1
    # Subscribed members per group as planned: exact when every connection opened.
    subscribed = Counter(m.channel for m in plan.members)
    expected = sum(len(seqs) * subscribed[channel] for channel, seqs in acked.items())
    sent = sent_of(result)
    delivered = result["delivered"]
    window = max(result["duration_s"], result["last_delivery_at"] - result["start_at"])
    line = contract(
        plan,
        result,
        errors,
        sent=sent,
        delivered=delivered,
        delivered_per_s=summary.per_s(delivered, window),
        expected=expected,
        latency=result["delivery_latency_ms"],
        sample=result["delivery_sample"],
        lane=groups.LANE,
    )
    return line | {"groups": len(subscribed), "seq": groups.seq_fields(acked, None, None)}


def sent_of(result: Mapping[str, Any]) -> int:
    """Commands fired, counting those with no live connection to go out on (as Python does)."""
    return int(result["sent"]) + int(result["errors"].get("no_connection", 0))


def driver_errors(plan: Plan, result: Mapping[str, Any], expected: tuple[str, ...] = ()) -> Counter[str]:
    """wsdrive's errors, refusals by code (except the `expected` ones), and unanswered
    commands under the Python path's names: `timeout` and `closed`."""
    errors: Counter[str] = Counter(result["errors"])
    refused = {code: n for code, n in result["outcomes"].items() if code != "ok" and code not in expected}
    errors.update(refused)
    errors.update({"timeout": result["timed_out"], "closed": result["unanswered_closed"]})
    errors.update({f"setup_{code}": n for code, n in plan.setup_errors.items()})
    return +errors


def contract(
    plan: Plan,
    result: Mapping[str, Any],
    errors: Counter[str],
    *,
    sent: int,
    delivered: int,
    delivered_per_s: float | None,
    expected: int,
    latency: dict[str, float | None],
    sample: dict[str, int],
    lane: str,
) -> dict[str, Any]:
    """The contract's fields, then the diagnostics the Python path prints that wsdrive has."""
    duration = float(result["duration_s"])
    connections = result["connections"]
    return {
        "scenario": plan.scenario,
        "connections": connections["connected"],
        "duration_s": duration,
        "sent": sent,
        "delivered": delivered,
        "delivered_per_s": delivered_per_s,
        "expected": expected,
        "delivery_ratio": summary.ratio(delivered, expected),
        "latency_ms": latency,
        "errors": dict(sorted(errors.items())),
        "driver": "native",
        # Cores' worth of CPU wsdrive used while sending (1.0 = a whole core), and in all.
        "generator_cpu": round(result["cpu_s_sending"] / duration, 3) if duration > 0 else None,
        "driver_cpu_s": result["cpu_s"],
        "latency_sample": sample,
        "url": plan.http_url,
        "protocol": plan.protocol,
        "workers": 1,
        "rate": plan.rate,
        "sent_per_s": summary.per_s(sent, duration),
        "ack_latency_ms": result["latency_ms"],
        "send_lag_ms": result["send_lag_ms"],
        "lanes": summary.lanes({("", lane): sent}, {lane: expected}, {lane: delivered}),
        "connect": {
            "attempted": connections["attempted"],
            "connected": connections["connected"],
            "failed": connections["failed"],
            "retried": connections["retried"],
            "per_s": connections["per_s"],
        },
    }
