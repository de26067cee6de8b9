"""The parent process of a run: set up, start workers, release them together, merge, report."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

import orjson

from loadtest import summary, worker
from loadtest.httpclient import HttpClient
from loadtest.options import Options
from loadtest.plan import Plan
from loadtest.scenarios import SCENARIOS
from loadtest.scenarios.base import REPLY_TIMEOUT_S, SetupError
from loadtest.stats import Totals, WorkerReport

T = TypeVar("T")

START_DELAY_S = 0.3
"""Lead time between `go` and the first scheduled send, so all workers start on time."""
SPAWN_BUDGET_S = 30.0
"""Time for worker processes to start, on top of their connection phase."""
STOP_BUDGET_S = 5.0


class Run:
    """One run's worker processes and what they reported."""

    def __init__(self, plan: Plan, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.reports: list[WorkerReport] = []
        self.failures: list[str] = []
        ctx = multiprocessing.get_context("spawn")
        self.finished = ctx.Value("i", 0)
        self.links: dict[Connection, BaseProcess] = {}
        for index in range(plan.workers):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=worker.main,
                args=(plan, index, theirs, self.finished),
                name=f"loadtest-worker-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.links[ours] = process

    def execute(self) -> None:
        """Connection phase, simultaneous start, sending and drain, each with a deadline."""
        plan = self.plan
        ready = self._collect("ready", time.time() + plan.ramp + worker.CONNECT_BUDGET_S + SPAWN_BUDGET_S)
        start = time.time() + START_DELAY_S
        for link in ready:
            link.send(("go", start))
        self.progress.begin(start)
        budget = plan.duration + plan.drain + REPLY_TIMEOUT_S + worker.CLOSE_BUDGET_S + 10
        self._collect("done", start + budget)

    def _collect(self, kind: str, deadline: float) -> list[Connection]:
        """Wait until every live worker sent `kind`; workers that fail or overrun are dropped."""
        waiting = set(self.links)
        arrived: list[Connection] = []
        while waiting:
            left = deadline - time.time()
            if left <= 0:
                for link in waiting:
                    self._drop(link, f"worker overran its {kind} deadline")
                break
            readable = wait(list(waiting), timeout=min(left, 0.5))
            for link in [link for link in list(waiting) if link in readable]:
                try:
                    message = link.recv()
                except (EOFError, OSError):
                    waiting.discard(link)
                    self._drop(link, "worker exited without reporting")
                    continue
                if message[0] == "progress":
                    self.progress.update(link, message[1])
                elif message[0] == kind:
                    waiting.discard(link)
                    arrived.append(link)
                    if kind == "done":
                        self.reports.append(message[1])
                    else:
                        self.progress.connected(link, message[1])
                else:  # "failed"
                    waiting.discard(link)
                    self._drop(link, str(message[1]))
            self.progress.show()
        return arrived

    def _drop(self, link: Connection, reason: str) -> None:
        self.failures.append(reason)
        self.stop(self.links.pop(link))
        link.close()

    def stop(self, process: BaseProcess) -> None:
        process.join(STOP_BUDGET_S)
        if process.is_alive():
            process.terminate()
            process.join(STOP_BUDGET_S)

    def close(self) -> None:
        for link, process in list(self.links.items()):
            self.stop(process)
            link.close()
        self.links.clear()


class Progress:
    """One self-rewriting status line on stderr, only when stderr is a terminal."""

    def __init__(self, scenario: str, enabled: bool) -> None:
        self.scenario = scenario
        self.enabled = enabled
        self.start = 0.0
        self.subscribed: dict[Connection, int] = {}
        self.latest: dict[Connection, dict[str, int]] = {}
        self.shown = 0.0

    def connected(self, link: Connection, subscribed: dict[str, int]) -> None:
        self.subscribed[link] = sum(subscribed.values())

    def begin(self, start: float) -> None:
        self.start = start

    def update(self, link: Connection, snapshot: dict[str, int]) -> None:
        self.latest[link] = snapshot

    def show(self) -> None:
        if not self.enabled or time.time() - self.shown < 0.5:
            return
        self.shown = time.time()
        total = {k: sum(s.get(k, 0) for s in self.latest.values()) for k in ("sent", "delivered", "errors")}
        elapsed = max(0.0, time.time() - self.start) if self.start else 0.0
        sys.stderr.write(
            f"\r{self.scenario}: {elapsed:5.1f}s  connections {sum(self.subscribed.values())}  "
            f"sent {total['sent']}  delivered {total['delivered']}  errors {total['errors']}  "
        )
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def prepare(opts: Options) -> Plan | None:
    """The scenario's set-up through the HTTP API; None, said on stderr, if it failed."""
    scenario = SCENARIOS[opts.scenario]
    run_id = secrets.token_hex(4)
    try:
        return asyncio.run(with_api(opts.url, lambda api: scenario.prepare(opts, api, run_id)))
    except SetupError as exc:
        print(f"loadtest: setup failed: {exc}", file=sys.stderr)
        return None


def run(opts: Options) -> int:
    """A whole run; prints the summary line and returns the exit status."""
    if opts.driver == "native":
        from loadtest.native.run import run as run_native  # builds and runs the C driver

        return run_native(opts)
    scenario = SCENARIOS[opts.scenario]
    plan = prepare(opts)
    if plan is None:
        return 1
    progress = Progress(opts.scenario, sys.stderr.isatty())
    execution = Run(plan, progress)
    try:
        execution.execute()
    except KeyboardInterrupt:
        print("\nloadtest: interrupted", file=sys.stderr)
        return 130
    finally:
        execution.close()
        progress.end()
    totals = Totals.merge(execution.reports)
    totals.errors.update({f"setup_{code}": n for code, n in plan.setup_errors.items()})
    if execution.failures:
        totals.errors["worker_failed"] += len(execution.failures)
        for reason in execution.failures:
            print(f"loadtest: worker failed: {reason}", file=sys.stderr)
    extra = asyncio.run(with_api(opts.url, lambda api: scenario.finish(plan, api, totals)))
    emit(summary.build(plan, totals, scenario.expected(plan, totals), extra), opts)
    if opts.plot_path:
        from loadtest.plot import draw  # matplotlib is slow to import; only load it when asked

        draw(totals.seconds, opts.plot_path, title=f"livemart loadtest {opts.scenario}")
    return 1 if execution.failures else 0


def emit(result: dict[str, Any], opts: Options) -> None:
    """Print the summary line, and write it to --json FILE when asked."""
    line = orjson.dumps(result).decode()
    try:
        print(line, flush=True)
    except BrokenPipeError:  # the reader (e.g. `| head`) left; --json and --plot still happen
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps the exit-time flush quiet)
    if opts.json_path:
        with open(opts.json_path, "w", encoding="utf-8") as out:
            out.write(line + "\n")


async def with_api(url: str, work: Callable[[HttpClient], Awaitable[T]]) -> T:
    """Run `work` with a setup client that is closed afterwards."""
    api = HttpClient(url)
    try:
        return await work(api)
    finally:
        await api.close()
