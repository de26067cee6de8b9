"""livemart and its peers side by side: one run, same core, same generator, same load points.

Each server in turn is started pinned to one core (`taskset -c 0` by default), fresh for
every point; the generator (`fanout_load.py`) runs pinned to the other core. Points: 1,000
and 5,000 subscribers in one room x 10 / 50 / 200 messages/s, ~10 s each, and an idle
point (10,000 subscribed connections, server RSS per connection). Writes
results/side_by_side.{json,md,png} and prints progress on stderr.

    .venv/bin/python benchmarks/side_by_side.py                       # everything, 13-26 min
    .venv/bin/python benchmarks/side_by_side.py --servers livemart --subscribers 5000 \
        --rates 200,400,800 --idle 0 --name livemart_limit          # find livemart's limit

`--driver native` has the subscribers opened and counted by the C driver wsdrive
(benchmarks/native) instead of Python connections, so the generator core stops being the
limit near a million deliveries a second; it speaks livemart's protocol only, so the peers
are skipped then.

    .venv/bin/python benchmarks/side_by_side.py --driver native --servers livemart-embedded,livemart \
        --subscribers 5000 --rates 200 --idle 0 --name native_5000

Peers: python-socketio with AsyncRedisManager, a `websockets.broadcast` relay, and Node's
socket.io with the Redis adapter (skipped with a note when node or npm is missing). The
Python peers are installed into benchmarks/.venv-peers on first use, the Node one into
benchmarks/peers/node/node_modules, from the pinned versions in peers/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import native
import redis
from fanout_report import profile_top, write_reports

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
PEERS_VENV = HERE / ".venv-peers"
NODE_DIR = PEERS / "node"
RESULTS = HERE / "results"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SCRUBBED = ("REDIS_URL", "DATABASE_URL")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SECRET = "side-by-side-" + secrets.token_hex(16)
API_KEY = "side-by-side-" + secrets.token_hex(8)


@dataclass
class Server:
    """A server under test: how to start it, and how the generator talks to it."""

    name: str
    kind: str
    """The generator's dialect: livemart, socketio or ws."""
    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    setup: Callable[[], str | None] = lambda: None
    """Installs what the server needs; returns why it cannot run, or None."""
    python: bool = True
    """py-spy can profile it."""


def _python_peers() -> str | None:
    """Create benchmarks/.venv-peers with the pinned Python peers if it is not there."""
    python = PEERS_VENV / "bin" / "python"
    if python.exists():
        return None
    progress("installing the Python peers into benchmarks/.venv-peers")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "-r", str(PEERS / "requirements.txt")]
        subprocess.run(pip, check=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(PEERS_VENV, ignore_errors=True)
        return f"could not install the Python peers ({exc})"
    return None


def _node_peer() -> str | None:
    """npm install into peers/node unless node or npm is missing or the install fails."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node or npm not found"
    if (NODE_DIR / "node_modules" / "socket.io").exists():
        return None
    progress("installing socket.io and the Redis adapter with npm")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"npm install failed: {done.stderr.strip()[-300:]}"
    return None


def snapshot(rev: str, into: Path) -> str:
    """Export livemart at `rev` into `into` and return the commit id.

    The working tree is shared with people editing it; a run measures one commit, named
    in the results, not whatever the files hold at the moment each server starts.
    """
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit


def servers(run_id: str, workdir: Path, source: Path, settings: dict[str, str]) -> dict[str, Server]:
    livemart = [sys.executable, "-m", "livemart", "serve", "--host", "127.0.0.1", "--port"]
    livemart_env = {
        "PYTHONPATH": str(source),
        "LIVEMART_SECRET": SECRET,
        "LIVEMART_API_KEY": API_KEY,
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'livemart.db'}",
        "LIVEMART_HISTORY_TTL_S": "600",
        **settings,
    }
    peer_python = str(PEERS_VENV / "bin" / "python")
    return {
        s.name: s
        for s in (
            Server(
                "livemart",
                "livemart",
                lambda port: [*livemart, str(port)],
                {**livemart_env, "REDIS_URL": REDIS_URL, "LIVEMART_REDIS_PREFIX": f"bench-{run_id}:"},
                cwd=source,
            ),
            Server(
                "livemart-embedded", "livemart", lambda port: [*livemart, str(port)], livemart_env, cwd=source
            ),
            Server(
                "python-socketio",
                "socketio",
                lambda port: [
                    peer_python,
                    str(PEERS / "socketio_server.py"),
                    "--port",
                    str(port),
                    "--redis",
                    REDIS_URL,
                    "--channel",
                    f"bench-{run_id}",
                ],
                setup=_python_peers,
            ),
            Server(
                "websockets-broadcast",
                "ws",
                lambda port: [peer_python, str(PEERS / "ws_broadcast.py"), "--port", str(port)],
                setup=_python_peers,
            ),
            Server(
                "node-socket.io",
                "socketio",
                lambda port: [
                    "node",
                    "server.js",
                    "--port",
                    str(port),
                    "--redis",
                    REDIS_URL,
                    "--key",
                    f"bench-{run_id}",
                ],
                cwd=NODE_DIR,
                setup=_node_peer,
                python=False,
            ),
        )
    }


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Running:
    """One started server process (taskset execs it, so its pid is the server's)."""

    def __init__(self, server: Server, cpu: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Only what the server entry says: no REDIS_URL or LIVEMART_* leaks in from outside.
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("LIVEMART_")}
        env.update(PYTHONUNBUFFERED="1", **server.env)
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu, *server.command(self.port)],
            cwd=server.cwd,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_generator(
    server: Server, running: Running, cpu: str, extra: list[str], timeout_s: float
) -> dict[str, Any]:
    command = [
        "taskset", "-c", cpu, sys.executable, str(HERE / "fanout_load.py"),
        "--kind", server.kind, "--url", running.url, "--server-pid", str(running.proc.pid), *extra,
    ]  # fmt: skip
    env = {**os.environ, "LIVEMART_SECRET": SECRET, "LIVEMART_API_KEY": API_KEY}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"generator failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def one_point(
    server: Server, args: argparse.Namespace, log: Path, extra: list[str], budget_s: float
) -> dict[str, Any]:
    running = Running(server, args.server_cpu, log)
    try:
        running.wait_ready()
        return run_generator(server, running, args.generator_cpu, extra, budget_s)
    finally:
        running.stop()


def load_row(server: Server, args: argparse.Namespace, subscribers: int, rate: int) -> dict[str, Any]:
    """One load point on a fresh server; a failure becomes a row that says so."""
    label = f"{server.name}: {subscribers} subscribers x {rate} msg/s"
    extra = [
        "--subscribers", str(subscribers), "--rate", str(rate),
        "--duration", str(args.duration), "--drain", str(args.drain),
    ]  # fmt: skip
    profile = args.out / f"{args.name}-{server.name}-{subscribers}x{rate}.pyspy"
    if args.profile and server.python:
        extra += ["--profile", str(profile)]
    if args.driver == "native":
        extra += ["--driver", "native"]
    log = args.out / f"{args.name}-{server.name}.log"
    try:
        row = one_point(server, args, log, extra, args.duration + args.drain + 180)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        progress(f"{label}: FAILED: {exc}")
        return {"server": server.name, "subscribers": subscribers, "rate": rate, "failed": str(exc)[:300]}
    row["server"] = server.name
    if args.profile and profile.exists():
        row["profile"] = profile_top(profile)
    progress(
        f"{label}: {row['delivered_per_s']:,.0f} deliveries/s, "
        f"ratio {row['delivery_ratio']}, p99 {row['latency_ms']['p99']} ms, "
        f"server CPU {row['server_cpu']}, generator CPU {row['generator_cpu']}"
    )
    return row


def idle_row(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """The idle-memory point on a fresh server."""
    log = args.out / f"{args.name}-{server.name}.log"
    try:
        point = one_point(server, args, log, ["--idle", str(args.idle)], 300)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        progress(f"{server.name}: idle point FAILED: {exc}")
        return {"server": server.name, "failed": str(exc)[:300]}
    point["server"] = server.name
    kib = point["rss_per_connection_kib"]
    progress(f"{server.name}: idle {point['idle_connections']} connections, {kib} KiB each")
    return point


def delete_redis_keys(run_id: str) -> None:
    """Remove the keys this run's livemart created (its own prefix only)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"bench-{run_id}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.RedisError as exc:
        progress(f"note: could not clean Redis keys bench-{run_id}:* ({exc})")
    finally:
        client.close()


def parse_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    all_servers = [
        "livemart",
        "livemart-embedded",
        "python-socketio",
        "websockets-broadcast",
        "node-socket.io",
    ]
    parser.add_argument(
        "--servers", default=",".join(all_servers), help="comma-separated, from: " + ", ".join(all_servers)
    )
    parser.add_argument("--subscribers", default="1000,5000", help="subscriber counts (one room)")
    parser.add_argument("--rates", default="10,50,200", help="messages per second into the room")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing per point")
    parser.add_argument("--drain", type=float, default=5.0, help="max seconds for late deliveries")
    parser.add_argument(
        "--idle", type=int, default=10_000, help="idle connections for the memory point (0: skip)"
    )
    parser.add_argument("--server-cpu", default="0", help="core the servers are pinned to")
    parser.add_argument("--generator-cpu", default="1", help="core the generator is pinned to")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the Python servers over each send window"
    )
    parser.add_argument(
        "--livemart-setting",
        action="append",
        default=[],
        metavar="LIVEMART_X=VALUE",
        help="setting for the livemart servers (repeatable), e.g. LIVEMART_LARGE_FLUSH_INTERVAL_S=0.2",
    )
    parser.add_argument(
        "--driver",
        choices=("python", "native"),
        default="python",
        help="who opens and counts the subscribers: Python, or the C driver wsdrive (livemart only)",
    )
    parser.add_argument("--livemart-rev", default="HEAD", help="git revision of livemart to measure")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results")
    parser.add_argument("--name", default="side_by_side", help="base name of the result files")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    run_id = secrets.token_hex(4)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    progress(f"load average {load_start}")
    rows: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        commit = snapshot(args.livemart_rev, Path(tmp) / "livemart")
        progress(f"livemart at {commit[:12]}")
        settings = dict(item.split("=", 1) for item in args.livemart_setting)
        known = servers(run_id, Path(tmp), Path(tmp) / "livemart", settings)
        ready = []
        if args.driver == "native":
            native.build()  # now, not on the generator's core in the middle of a point
        for name in args.servers.split(","):
            native_only = args.driver == "native" and known[name].kind != "livemart"
            reason = "the native driver speaks livemart only" if native_only else known[name].setup()
            if reason is None:
                ready.append(known[name])
            else:
                progress(f"{name}: skipped: {reason}")
                skipped[name] = reason
        # Point by point, every server in turn: a change in machine load over the run then
        # touches all servers alike instead of whichever ran last.
        for subscribers in parse_list(args.subscribers):
            for rate in parse_list(args.rates):
                for server in ready:
                    rows.append(load_row(server, args, subscribers, rate))
        if args.idle:
            for server in ready:
                idle.append(idle_row(server, args))
    delete_redis_keys(run_id)
    elapsed = time.time() - began
    meta = {
        "elapsed_s": round(elapsed, 1),
        "load_average_start": load_start,
        "load_average": os.getloadavg(),
        "duration_s": args.duration,
        "server_cpu": args.server_cpu,
        "generator_cpu": args.generator_cpu,
        "driver": args.driver,
        "skipped": skipped,
        "livemart_settings": args.livemart_setting,
        "livemart_commit": commit,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(began)),
    }
    write_reports(args.out / args.name, rows, idle, meta)
    progress(f"done in {elapsed / 60:.1f} min: {args.out / args.name}.md, .png, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
