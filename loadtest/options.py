"""Command-line options of `livemart loadtest`, validated into one frozen value."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadtest.frames import Protocol

SCENARIOS = ("viewers", "comments", "flashsale", "groups")
DRIVERS = ("python", "native")
NATIVE_SCENARIOS = ("flashsale", "groups")
"""Scenarios the native driver (wsdrive) can send and receive for."""

MAX_CONNECTIONS = 100_000
MAX_DURATION_S = 3600.0
MAX_RATE = 1_000_000.0
MAX_WORKERS = 64


class OptionsError(ValueError):
    """Options that parse but cannot make a run; the message names the option."""


@dataclass(frozen=True)
class Options:
    scenario: str
    url: str
    """Base http(s) URL of the server."""
    viewers: int
    """Connections (viewers, commenters, buyers or group members)."""
    rooms: int
    rate: float
    """Messages (publishes, comments, reservations, group sends) per second, all workers."""
    duration: float
    """Seconds of scheduled sending."""
    ramp: float
    """Seconds over which connections are opened (0: as fast as allowed)."""
    drain: float
    """At most this many seconds after the last send to wait for deliveries."""
    workers: int
    protocol: Protocol
    secret: str
    api_key: str | None
    stock: int
    groups: int
    json_path: str | None
    plot_path: str | None
    driver: str
    """`python` (the workers) or `native` (one wsdrive process does the socket work)."""

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/ws"


def _bounded(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The loadtest options, with their defaults and bounds."""
    arg = parser.add_argument
    arg("scenario", choices=SCENARIOS)
    arg("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    arg("--viewers", type=_bounded(int, 1, MAX_CONNECTIONS), default=100,
        help="WebSocket connections (default 100)")  # fmt: skip
    arg("--rooms", type=_bounded(int, 1, 10_000), default=1, help="live rooms (default 1)")
    arg("--rate", type=_bounded(float, 0.1, MAX_RATE), default=10.0,
        help="messages per second, all workers together (default 10)")  # fmt: skip
    arg("--duration", type=_bounded(float, 0.1, MAX_DURATION_S), default=10.0,
        help="seconds of sending (default 10)")  # fmt: skip
    arg("--ramp", type=_bounded(float, 0, MAX_DURATION_S), default=0.0,
        help="seconds over which to open the connections (default 0: at once)")  # fmt: skip
    arg("--drain", type=_bounded(float, 0, 600), default=5.0,
        help="max seconds to wait for deliveries after the last send (default 5)")  # fmt: skip
    arg("--workers", type=_bounded(int, 1, MAX_WORKERS), default=1,
        help="generator processes (default 1)")  # fmt: skip
    arg("--protocol", choices=("json", "msgpack"), default="json")
    arg("--secret", default=None, help="token signing key (default: env LIVEMART_SECRET)")
    arg("--api-key", default=None, help="key for POST /api/publish (default: env LIVEMART_API_KEY)")
    arg("--stock", type=_bounded(int, 1, 10_000_000), default=100,
        help="flashsale: units on sale (default 100)")  # fmt: skip
    arg("--groups", type=_bounded(int, 1, 10_000), default=1, help="groups: groups (default 1)")
    arg("--json", dest="json_path", metavar="FILE", help="also write the summary to FILE")
    arg("--plot", dest="plot_path", metavar="FILE.png", help="draw latency and delivered/s")
    arg("--driver", choices=DRIVERS, default="python",
        help="who sends and receives: python workers (default) or native, the C driver wsdrive "
        f"({' and '.join(NATIVE_SCENARIOS)} only; needs a C compiler)")  # fmt: skip


def from_namespace(ns: argparse.Namespace) -> Options:
    """Options from parsed arguments and the environment; OptionsError if unusable."""
    parts = urlsplit(ns.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OptionsError(f"--url must be http(s)://HOST[:PORT], got {ns.url!r}")
    secret = ns.secret or os.environ.get("LIVEMART_SECRET")
    if not secret:
        raise OptionsError("--secret or LIVEMART_SECRET is needed to mint tokens the server accepts")
    api_key = ns.api_key or os.environ.get("LIVEMART_API_KEY")
    if ns.scenario == "viewers" and not api_key:
        raise OptionsError("viewers publishes through /api/publish: give --api-key or LIVEMART_API_KEY")
    if ns.workers > ns.viewers:
        raise OptionsError("--workers cannot exceed --viewers (each worker needs connections)")
    if ns.scenario in ("viewers", "comments") and ns.rooms > ns.viewers:
        raise OptionsError("--rooms cannot exceed --viewers")
    if ns.scenario == "groups" and ns.groups > ns.viewers:
        raise OptionsError("--groups cannot exceed --viewers (each group needs an owner)")
    if ns.driver == "native":
        _check_native(ns, parts.scheme)
    return Options(
        scenario=ns.scenario,
        url=ns.url.rstrip("/"),
        viewers=int(ns.viewers),
        rooms=int(ns.rooms),
        rate=float(ns.rate),
        duration=float(ns.duration),
        ramp=float(ns.ramp),
        drain=float(ns.drain),
        workers=int(ns.workers),
        protocol=ns.protocol,
        secret=secret,
        api_key=api_key,
        stock=int(ns.stock),
        groups=int(ns.groups),
        json_path=ns.json_path,
        plot_path=ns.plot_path,
        driver=ns.driver,
    )


def _check_native(ns: argparse.Namespace, scheme: str) -> None:
    """What wsdrive cannot do is refused before anything is created on the server."""
    if ns.scenario not in NATIVE_SCENARIOS:
        raise OptionsError(
            f"--driver native supports the {' and '.join(NATIVE_SCENARIOS)} scenarios, "
            f"not {ns.scenario}: use --driver python"
        )
    if scheme != "http":
        raise OptionsError("--driver native speaks plain ws:// only: give an http:// --url")
    if ns.protocol != "json":
        raise OptionsError("--driver native speaks the json subprotocol only")
    if ns.workers != 1:
        raise OptionsError("--driver native is one process: --workers does not apply")
    if ns.ramp:
        raise OptionsError("--driver native opens connections as fast as it can: --ramp does not apply")
