"""The native WebSocket load driver, `wsdrive` (wsdrive.c): built on first use, run as a process.

Reading or writing one WebSocket frame costs a Python generator 15-50 µs, so on a 2-core
machine the generator saturates its core before the server does. The driver does the
same work in C with one epoll loop (see the comment at the top of wsdrive.c for its modes
and output); these helpers build it and run it, for `livemart loadtest --driver native`
and the benchmark scripts.

The source ships inside the package; the binary goes to a user cache directory
(`$XDG_CACHE_HOME/livemart/`, else `~/.cache/livemart/`), named after the source's hash,
because site-packages may be read-only. It is built by a plain `cc -O2`: no flags,
libraries or build system to install.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().with_name("wsdrive.c")
READY = "wsdrive: ready"
"""The stderr line the driver prints once every connection is open (or has failed)."""


class BuildError(RuntimeError):
    """No C compiler, or the source did not compile, or there is nowhere to put the binary."""


def compiler() -> str | None:
    """`$CC`, else `cc` or `gcc` on PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def cache_dir() -> Path:
    """Where built binaries live: `$XDG_CACHE_HOME/livemart`, else `~/.cache/livemart`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livemart"


def binary() -> Path:
    """The binary's path for this source: a changed source gets a new name, so a stale
    build is never run."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"wsdrive-{digest}"


def build() -> Path:
    """The driver binary, compiled when this source has not been built yet.

    Compiled under a temporary name and renamed into place, so concurrent callers never
    run a half-written file.
    """
    target = binary()
    if target.exists():
        return target
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler: install gcc (or set CC), or use --driver python")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create {target.parent} for the driver binary: {exc}") from exc
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "wsdrive"
        done = subprocess.run(
            [cc, "-O2", "-o", str(out), str(SOURCE)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BuildError(f"{cc} failed on {SOURCE.name}:\n{done.stderr[-2000:]}")
        os.replace(out, target)
    return target


def result_of(stdout: str) -> dict[str, Any]:
    """The driver's JSON result: the last line of its output."""
    lines = stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("wsdrive printed no result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def command(
    args: Sequence[str],
    *,
    pinned: Sequence[str] = (),
    timeout_s: float,
    on_ready: Callable[[], None] = lambda: None,
    log: Callable[[str], object] = sys.stderr.write,
) -> dict[str, Any]:
    """Run `wsdrive command ARGS...` to the end, behind `pinned` (e.g. `taskset -c 1`).

    Each line of its progress goes to `log` (this process's stderr by default); `on_ready`
    runs when every connection is open, just before sending starts (to read a server's
    CPU over the run alone).
    """
    with subprocess.Popen(
        [*pinned, str(build()), "command", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            for line in proc.stderr:
                log(line)
                if line.startswith(READY):
                    on_ready()
            stdout = proc.stdout.read()
        finally:
            timer.cancel()
    if proc.returncode != 0:
        raise RuntimeError(f"wsdrive exited with {proc.returncode}")
    return result_of(stdout)


class Listener:
    """`wsdrive listen --control` as a child process of an asyncio program.

    `start()` returns once every connection is joined; the caller then publishes, and
    `finish(expected)` tells the driver how many markers are owed and waits for its result
    (it stops at that count, or `--drain` seconds later).
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        """The driver's stderr lines (progress), for error messages."""
        self.connected = 0
        """Connections joined, from the ready line."""
        self._reading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(build()), "listen", "--control", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        ready = asyncio.get_running_loop().create_future()
        self._reading = asyncio.create_task(self._read_log(ready))
        await ready

    async def _read_log(self, ready: asyncio.Future[None]) -> None:
        """Keep the stderr pipe drained; resolve `ready` at the ready line (or at exit)."""
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if line.startswith(READY) and not ready.done():
                fields = dict(part.split("=", 1) for part in line.removeprefix(READY).split())
                self.connected = int(fields["connected"])
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(
                RuntimeError("wsdrive ended before it was ready: " + " | ".join(self.log[-5:]))
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def finish(self, expected: int) -> dict[str, Any]:
        """Tell the driver what is owed; its result once it has counted that or drained."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"expect {expected}\n".encode())
        await self.proc.stdin.drain()
        stdout = await self.proc.stdout.read()
        await self.proc.wait()
        self.proc.stdin.close()
        if self._reading is not None:
            await self._reading
        if self.proc.returncode != 0:
            raise RuntimeError(f"wsdrive exited with {self.proc.returncode}: " + " | ".join(self.log[-5:]))
        return result_of(stdout.decode())

    async def abort(self) -> None:
        """Stop a driver that will not be asked to finish (the run failed)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
