"""Throwaway Redis and PostgreSQL servers, and per-test isolation inside shared ones.

Tests talk to real servers. When the environment names none, these helpers start private
ones on free ports in temporary directories, so a developer needs only the binaries.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

START_TIMEOUT_S = 30.0
"""Upper bound for a throwaway server to come up before the run gives up."""


class MissingService(Exception):
    """A server binary is absent and could not be installed; the message names the package."""


@dataclass(frozen=True)
class BrokerKind:
    """Which broker a contract test runs against: the in-process one or a Redis server."""

    name: str
    redis_url: str | None
    prefix: str


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_prefix() -> str:
    """A Redis key prefix no other test uses, so cleanup can never touch foreign keys."""
    return f"lmt:{uuid.uuid4().hex[:12]}:"


def unique_database_name() -> str:
    return f"lmt_{uuid.uuid4().hex[:12]}"


def _apt_install(package: str) -> None:
    """Install a Debian package; only attempted as root where apt-get exists."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise MissingService(
                f"`{' '.join(command)}` failed while installing the Debian package "
                f"{package!r}:\n{done.stderr[-2000:]}"
            )


def _locate(name: str) -> str | None:
    """Find a binary on PATH or in Debian's versioned PostgreSQL directories (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
        reverse=True,
    )
    return candidates[0] if candidates else None


def find_binary(name: str, package: str) -> str:
    """Locate `name`; as root with apt-get, install `package` once if it is missing."""
    found = _locate(name)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install(package)
        found = _locate(name)
        if found:
            return found
    raise MissingService(
        f"`{name}` was not found. Install the Debian package {package!r} "
        f"(apt-get install {package}), or point the tests at a running server with "
        f"{'REDIS_URL' if package == 'redis-server' else 'DATABASE_URL'}."
    )


def answers_ping(port: int) -> bool:
    """True once a Redis on 127.0.0.1:``port`` answers PING."""
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


class RedisServer:
    """A private `redis-server` that keeps nothing on disk; stopped and removed by `stop()`."""

    def __init__(self, port: int | None = None) -> None:
        binary = find_binary("redis-server", "redis-server")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="livemart-redis-"))
        self._log = self._dir / "redis.log"
        self._proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._dir),
                "--logfile", str(self._log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers_ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


class PostgresCluster:
    """A private PostgreSQL cluster (initdb + pg_ctl) with trust auth on a free port.

    initdb refuses to run as root, so as root every server command runs as the `postgres`
    user via runuser, in a temporary directory that user owns.
    """

    def __init__(self) -> None:
        initdb = find_binary("initdb", "postgresql")
        self._pg_ctl = find_binary("pg_ctl", "postgresql")
        self._as_user: list[str] = []
        self._dir = Path(tempfile.mkdtemp(prefix="livemart-pg-"))
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as exc:
                shutil.rmtree(self._dir, ignore_errors=True)
                raise MissingService(
                    "running as root needs the `postgres` user for initdb; install the Debian "
                    "package 'postgresql', which creates it"
                ) from exc
            os.chown(self._dir, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._data = self._dir / "data"
        self._log = self._dir / "server.log"
        self._run(
            [initdb, "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            "initdb",
        )
        self._options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self._dir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run(
            [
                self._pg_ctl, "start", "-D", str(self._data), "-l", str(self._log),
                "-w", "-t", str(int(START_TIMEOUT_S)), "-o", self._options,
            ],
            "pg_ctl start",
        )  # fmt: skip

    def pause(self) -> None:
        """Stop the server but keep its data, as an outage would."""
        self._run([self._pg_ctl, "stop", "-D", str(self._data), "-m", "fast", "-w"], "pg_ctl stop")

    def resume(self) -> None:
        self._run(
            [
                self._pg_ctl, "start", "-D", str(self._data), "-l", str(self._log),
                "-w", "-t", str(int(START_TIMEOUT_S)), "-o", self._options,
            ],
            "pg_ctl start",
        )  # fmt: skip

    def _run(self, command: list[str], what: str) -> None:
        done = subprocess.run(
            [*self._as_user, *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S * 2,
        )
        if done.returncode != 0:
            log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
            shutil.rmtree(self._dir, ignore_errors=True)
            raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr}\n{log}")

    def stop(self) -> None:
        subprocess.run(
            [*self._as_user, self._pg_ctl, "stop", "-D", str(self._data), "-m", "fast", "-w"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT_S * 2,
        )
        shutil.rmtree(self._dir, ignore_errors=True)


def delete_prefixed(redis_url: str, prefix: str) -> int:
    """Delete the keys under `prefix` (found with SCAN) and nothing else; return how many."""
    if not prefix or any(ch in prefix for ch in "*?[]\\"):
        raise ValueError(f"refusing to clean up with an empty or glob-like prefix: {prefix!r}")
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


def postgres_admin_from_env(value: str | None) -> str | None:
    """`DATABASE_URL` as an asyncpg URL if it points at PostgreSQL, else None."""
    if not value:
        return None
    url = make_url(value)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def database_url_for(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def run_sql(url: str, statement: str) -> Any:
    """Run one autocommit statement and return its first value, if it returns rows.

    It runs on a thread with its own event loop, so sync fixtures can use it without
    touching the loop that pytest-asyncio gives the test.
    """

    async def run() -> Any:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(statement))
                return result.scalar() if result.returns_rows else None
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result(timeout=60)


def create_database(admin_url: str, name: str) -> None:
    run_sql(admin_url, f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    run_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterNodes:
    """A private Redis Cluster of `masters` nodes (no replicas) from redis-server binaries.

    Each node keeps its directory (and so its nodes.conf) across `restart`, so a restarted
    node rejoins with its slots but, like every server here, none of its data.
    """

    def __init__(self, masters: int = 3) -> None:
        self._binary = find_binary("redis-server", "redis-server")
        self._cli = find_binary("redis-cli", "redis-tools")
        self.root = Path(tempfile.mkdtemp(prefix="livemart-rcluster-"))
        self.ports = [_cluster_port() for _ in range(masters)]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for port in self.ports:
                self._start(port)
            subprocess.run(
                [self._cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=START_TIMEOUT_S,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def _start(self, port: int) -> None:
        node_dir = self.root / str(port)
        node_dir.mkdir(exist_ok=True)
        self._procs[port] = subprocess.Popen(
            [self._binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--save", "", "--appendonly", "no", "--dir", str(node_dir),
             "--logfile", str(node_dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers_ping(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster node {port} did not start")
            time.sleep(0.05)

    def wait_ok(self) -> None:
        """Until every node reports cluster_state:ok."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            states = []
            for port in self.ports:
                client = redis.Redis(port=port, socket_timeout=1)
                try:
                    states.append(client.cluster("info").get("cluster_state") == "ok")
                except redis.RedisError:
                    states.append(False)
                finally:
                    client.close()
            if all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def stop_node(self, port: int) -> None:
        proc = self._procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, port: int) -> None:
        self.stop_node(port)
        self._start(port)
        self.wait_ok()

    def stop(self) -> None:
        for port in list(self._procs):
            self.stop_node(port)
        shutil.rmtree(self.root, ignore_errors=True)
