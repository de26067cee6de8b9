"""Real `livemart serve` processes for end-to-end tests, and access tokens for them.

Each server gets its environment only from the arguments: variables such as REDIS_URL
that CI exports for the test session must not leak into a server meant to run embedded.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
import jwt

from tests.services import free_port

TEST_SECRET = "livemart-test-secret-0123456789abcdef"
"""Token signing key given to test servers (HS256 wants at least 32 bytes)."""

TEST_API_KEY = "livemart-test-api-key"
"""Server-to-server key given to test servers."""

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

_SCRUBBED = ("REDIS_URL", "DATABASE_URL")
"""Variables removed from the inherited environment, with every LIVEMART_* one."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies, however it dies.

    A killed pytest (a CI timeout, Ctrl-C twice) would otherwise leave servers running.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """The server exited or never became ready; the message carries its log tail."""


def token(user_id: str, name: str, secret: str, ttl: int = 3600) -> str:
    """An HS256 access token as the contract defines it (`sub`, `name`, `exp`)."""
    claims = {"sub": str(user_id), "name": name, "exp": int(time.time()) + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def server_env(
    *,
    database_url: str,
    redis_url: str | None,
    secret: str,
    api_key: str | None,
    redis_prefix: str | None,
    extra: Mapping[str, str],
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED and not key.startswith("LIVEMART_")
    }
    # The repository root on the path lets `python -m tests.coreapp` start from any cwd.
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        DATABASE_URL=database_url,
        LIVEMART_SECRET=secret,
        # Several servers per test share one PostgreSQL (100 connections by default).
        LIVEMART_DB_POOL_SIZE="4",
    )
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if api_key is not None:
        env["LIVEMART_API_KEY"] = api_key
    if redis_prefix is not None:
        env["LIVEMART_REDIS_PREFIX"] = redis_prefix
    env.update(extra)
    return env


class LivemartProcess:
    """One running `livemart serve`; output goes to `log_path`."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait for a graceful exit; a server that hangs is killed and reported."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"livemart pid {self.pid} ignored SIGTERM for {timeout}s; killed. "
                f"Log tail:\n{self.log_tail()}"
            ) from None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll GET /readyz until 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerStartError(
                        f"livemart exited with {self.proc.returncode} before it was ready. "
                        f"Log tail:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(f"{self.url}/readyz")
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        self.kill()
        raise ServerStartError(
            f"livemart on port {self.port} not ready after {timeout}s (last: {last}). "
            f"Log tail:\n{self.log_tail()}"
        )


class ProcessGroup:
    """Starts servers for one test and makes sure none outlives it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.default_database_url = f"sqlite+aiosqlite:///{workdir / 'livemart.db'}"
        self._running: list[LivemartProcess] = []
        self._logs: list[IO[bytes]] = []

    def start(
        self,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        secret: str = TEST_SECRET,
        api_key: str | None = TEST_API_KEY,
        redis_prefix: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        ready_timeout: float = READY_TIMEOUT_S,
        module: str = "livemart",
    ) -> LivemartProcess:
        """Spawn `livemart serve` on a free port and return once /readyz answers 200.

        Without `database_url` the processes of one test share a SQLite file in its tmp dir.
        `module` names what `python -m` runs: transport tests use `tests.coreapp`, the
        transport core with a test namespace and no domain.
        """
        port = free_port()
        log_path = self.workdir / f"livemart-{port}.log"
        log = log_path.open("wb")
        self._logs.append(log)
        command = [sys.executable, "-m", module, "serve"]
        command += ["--host", "127.0.0.1", "--port", str(port), *args]
        proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=server_env(
                database_url=database_url or self.default_database_url,
                redis_url=redis_url,
                secret=secret,
                api_key=api_key,
                redis_prefix=redis_prefix,
                extra=env or {},
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        server = LivemartProcess(proc, port, log_path)
        self._running.append(server)
        server.wait_ready(ready_timeout)
        return server

    __call__ = start

    def kill_all(self) -> None:
        for server in self._running:
            server.kill()
        self._running.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
