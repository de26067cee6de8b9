"""Exact delivery counts from a raw byte stream, with a deterministic latency sample.

Decoding every push costs microseconds; at a million deliveries a second that is more
than a generator core has. Markers (see `markers`) are plain ASCII inside strings, and a
server's WebSocket payloads travel unmasked, so a marker appears verbatim in the bytes a
socket reads whatever the framing: one push per frame, arrays of pushes, Socket.IO
packets. `bytes.count` over each read finds them all at C speed.

Two things need care. A marker may be cut between two reads: the last few bytes of each
read are kept and joined to the start of the next, and only a marker whose whole lane
prefix is seen is counted, so nothing is counted twice or missed. A frame header cannot
complete a prefix either: the bytes before a payload are a header, and no payload these
servers send begins with the rest of a prefix (``lt:``, ``t:`` or ``:``).

Latency is read for every `every`-th marker only (by position in the stream, so the
sample is spread over the run without randomness); counts stay exact.
"""

from __future__ import annotations

import math
import re
from itertools import accumulate

from loadtest.markers import LANES

PREFIX = b"[lt:"
LANE_PREFIXES = {lane: f"[lt:{letter}:".encode() for letter, lane in LANES.items()}
"""lane -> the bytes that open its markers; all the same length."""
KEEP = len(next(iter(LANE_PREFIXES.values()))) - 1
"""Bytes kept from the end of one read: a prefix can start in them and end in the next."""
MAX_MARKER = len(b"[lt:c:]") + 20
"""A whole marker's length at most (20 digits of microseconds)."""
_MARKER = re.compile(rb"\[lt:([cpm]):(\d{1,20})\]")

SAMPLES_PER_S = 10_000
"""Latency samples a generator process records per second at most. Locating and recording
a sample costs a few µs; at 20,000 a second it was a quarter of a saturated generator's
CPU, and 10,000 a second still gives 100,000 samples in a 10 s run."""


def sample_every(deliveries_per_s: float) -> int:
    """The sampling step that keeps recording under SAMPLES_PER_S at the expected rate."""
    return max(1, math.ceil(deliveries_per_s / SAMPLES_PER_S))


class MarkerCounter:
    """Counts markers per lane in a stream fed read by read; picks every `every`-th for latency."""

    __slots__ = ("_next", "_pending", "_prefixes", "_start", "_tail", "counts", "every", "samples", "total")

    def __init__(self, every: int = 1, phase: int = 0, lanes: tuple[str, ...] = tuple(LANE_PREFIXES)) -> None:
        """`lanes`: the lanes the stream carries; each costs one scan per read, so a stream
        known to carry fewer lanes should say so. Markers of other lanes must not occur."""
        if every < 1:
            raise ValueError("every must be at least 1")
        if not lanes or any(lane not in LANE_PREFIXES for lane in lanes):
            raise ValueError(f"lanes must be some of {sorted(LANE_PREFIXES)}")
        self.every = every
        self._prefixes = [(lane, LANE_PREFIXES[lane]) for lane in lanes]
        self._start = LANE_PREFIXES[lanes[0]] if len(lanes) == 1 else PREFIX
        """What the sampling walk looks for: the opening shared by the counted markers."""
        self.counts = dict.fromkeys(lanes, 0)
        """lane -> markers counted so far."""
        self.total = 0
        self.samples: list[tuple[str, int]] = []
        """(lane, sent_us) of sampled markers not yet taken by the caller."""
        self._next = phase % every
        """Stream position (0-based) of the next marker to sample."""
        self._tail = b""
        self._pending = b""
        """Start of a sampled marker whose end has not arrived yet."""

    def feed(self, data: bytes) -> int:
        """Count the markers that `data` completes; returns how many. Samples go to `samples`."""
        if self._pending:
            self._finish_pending(data)
        tail = self._tail
        boundary = tail + data[:KEEP] if tail else b""
        found = 0
        straddles = False
        for lane, prefix in self._prefixes:
            inside = data.count(prefix)
            across = boundary.count(prefix) if boundary else 0
            if inside or across:
                self.counts[lane] += inside + across
                found += inside + across
                straddles = straddles or across > 0
        self._tail = data[-KEEP:] if len(data) >= KEEP else (tail + data)[-KEEP:]
        if found:
            before = self.total
            self.total += found
            if self._next < self.total:
                # A marker cut between reads comes first; its start is in the old tail.
                cut = tail[tail.rfind(b"[") :] if straddles else b""
                self._sample(data, before, cut)
        return found

    def _sample(self, data: bytes, before: int, cut: bytes) -> None:
        """Read the sampled markers among those just counted (positions before..total-1)."""
        position = before
        if cut:
            if self._next == position:
                self._take(cut + data[:MAX_MARKER])
                self._next += self.every
            position += 1
        if self._next >= self.total:
            return
        # Markers of this read wanted, by their index among the read's own markers; one
        # split finds them all.
        wanted = range(self._next - position, self.total - position, self.every)
        self._next += len(wanted) * self.every
        parts = data.split(self._start, wanted[-1] + 1)
        if len(parts) < wanted[-1] + 2:  # only if the stream holds a malformed prefix
            return
        ends = list(accumulate(map(len, parts[: wanted[-1] + 1])))
        width = len(self._start)
        for k in wanted:
            at = ends[k] + k * width
            self._take(data[at : at + MAX_MARKER])

    def _take(self, head: bytes) -> None:
        match = _MARKER.match(head)
        if match is not None:
            self.samples.append((LANES[match[1].decode()], int(match[2])))
        elif len(head) < MAX_MARKER and b"]" not in head:
            self._pending = head  # cut off by the end of the read: finish with the next one

    def _finish_pending(self, data: bytes) -> None:
        head, self._pending = self._pending + data[:MAX_MARKER], b""
        self._take(head)
