"""``serve --workers N``: N worker processes sharing one port through SO_REUSEPORT.

The kernel spreads new connections over the workers; each has its own event loop, and
they share state only through Redis and SQL, exactly like processes on different
machines. The supervisor restarts a worker that dies, forwards SIGTERM/SIGINT so every
worker drains (close 1012), and kills what is still running after the drain bound.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("livemart.supervisor")

#: Pause before restarting a worker that died, so a crash loop does not spin.
RESTART_DELAY_S = 1.0


def _die_with_parent() -> None:
    """In a worker before exec: SIGTERM it if the supervisor dies (Linux), so no worker
    outlives a killed supervisor and keeps the port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class Supervisor:
    """Runs ``workers`` copies of ``command`` until asked to stop."""

    def __init__(self, command: Sequence[str], workers: int, *, stop_timeout_s: float) -> None:
        self._command = list(command)
        self._workers = workers
        self._stop_timeout_s = stop_timeout_s
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self._command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.info("worker %d started", proc.pid)
        return proc

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit status."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._procs = [self._spawn() for _ in range(self._workers)]
        while not self._stopping.wait(0.2):
            for i, proc in enumerate(self._procs):
                if proc.poll() is not None and not self._stopping.is_set():
                    log.error("worker %d exited with %s; restarting", proc.pid, proc.returncode)
                    time.sleep(RESTART_DELAY_S)
                    self._procs[i] = self._spawn()
        return self._stop()

    def _stop(self) -> int:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s + 2.0
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not drain in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        return 0
