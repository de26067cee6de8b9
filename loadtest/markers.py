"""Latency markers: the send time rides inside a message and is found again by a byte scan.

Every message the generator sends carries ``[lt:<lane>:<microseconds>]`` in a string field
(comment text, group message text, or a field of published data). Strings travel verbatim
in JSON and in msgpack, so one regular-expression pass over the raw frame finds every
marker, whether the frame holds one push or an array of them, without decoding the frame.
JSON escapes quotes and control characters inside strings, never brackets, colons, letters
or digits, so a marker cannot be split or disguised by the encoder.
"""

from __future__ import annotations

import re

LANES = {"c": "comment", "p": "priority", "m": "message"}
"""Marker letter -> lane name. Lanes are counted separately so loss in one is visible."""

_LETTERS = {name: letter for letter, name in LANES.items()}
_PATTERN = re.compile(rb"\[lt:([cpm]):(\d{1,20})\]")


def make(lane: str, sent_us: int) -> str:
    """The marker for a message of `lane` scheduled at `sent_us` (wall clock, microseconds)."""
    return f"[lt:{_LETTERS[lane]}:{sent_us}]"


def scan(frame: bytes) -> list[tuple[str, int]]:
    """Every (lane, sent_us) carried by a raw frame, one per push it contains."""
    return [(LANES[m[1].decode()], int(m[2])) for m in _PATTERN.finditer(frame)]


def find(text: str) -> tuple[str, int] | None:
    """The marker in an already decoded string, if any."""
    match = _PATTERN.search(text.encode())
    return None if match is None else (LANES[match[1].decode()], int(match[2]))
