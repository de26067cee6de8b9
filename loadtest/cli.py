"""`livemart loadtest`: the sub-command the lead's CLI registers."""

from __future__ import annotations

import argparse
import sys

from loadtest.options import OptionsError, add_arguments, from_namespace

DESCRIPTION = """\
Drive open-loop load (a fixed arrival rate, never waiting for replies) against a livemart
server and print one JSON summary line. Scenarios: viewers (HTTP publish fan-out), comments
(WebSocket comments), flashsale (reservations against a stock), groups (group chat)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `loadtest` to the `livemart` command line."""
    parser = subparsers.add_parser(
        "loadtest",
        help="drive a bounded, open-loop load test against a server",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        opts = from_namespace(args)
    except OptionsError as exc:
        print(f"livemart loadtest: {exc}", file=sys.stderr)
        return 2
    # The generator's imports (websockets, hdrh, multiprocessing) stay out of `serve`.
    from loadtest.runner import run

    return run(opts)
