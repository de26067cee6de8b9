"""Shared fixtures: real Redis and PostgreSQL (given or throwaway), per-test isolation inside
them, backend parametrization for contract tests, and real `livemart serve` processes.

A test that uses a Redis or PostgreSQL fixture is marked `redis` / `postgres`, so
`-m "not postgres"` works, and with LIVEMART_REQUIRE_SERVICES=1 (CI) a skipped one fails the
run instead of quietly shrinking the suite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.processes import ProcessGroup
from tests.services import (
    BrokerKind,
    MissingService,
    PostgresCluster,
    RedisClusterNodes,
    RedisServer,
    create_database,
    database_url_for,
    delete_prefixed,
    drop_database,
    postgres_admin_from_env,
    unique_database_name,
    unique_prefix,
)

_FIXTURE_MARKS = {
    "redis_cluster": "redis",
    "redis_url": "redis",
    "redis_prefix": "redis",
    "postgres_admin_url": "postgres",
    "postgres_url": "postgres",
}
"""Fixtures that reach a service, and the marker each one implies."""

_PARAM_MARKS = {("broker_kind", "redis"): "redis", ("database_url", "postgres"): "postgres"}
"""Parametrized fixtures that reach a service only for one of their values."""

_SERVICE_MARKS = frozenset(_FIXTURE_MARKS.values())


class ServiceGuard:
    """Marks service tests at collection and, under LIVEMART_REQUIRE_SERVICES=1, turns any
    skip among them into a failed session."""

    def __init__(self, required: bool) -> None:
        self.required = required
        self.service_tests: set[str] = set()
        self.skipped: list[str] = []

    @pytest.hookimpl(tryfirst=True)  # before `-m` deselection reads the markers
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            names = {_FIXTURE_MARKS[f] for f in getattr(item, "fixturenames", ()) if f in _FIXTURE_MARKS}
            callspec = getattr(item, "callspec", None)
            if callspec is not None:
                names |= {
                    mark for (fixture, value), mark in _PARAM_MARKS.items()
                    if callspec.params.get(fixture) == value
                }  # fmt: skip
            present = {m.name for m in item.iter_markers() if m.name in _SERVICE_MARKS}
            for name in sorted(names - present):
                item.add_marker(name)
            if names | present:
                self.service_tests.add(item.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        if report.skipped and nodeid in self.service_tests and nodeid not in self.skipped:
            self.skipped.append(nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.required and self.skipped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.required and self.skipped):
            return
        terminalreporter.section("LIVEMART_REQUIRE_SERVICES", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(self.skipped)} test(s) needing Redis/PostgreSQL were skipped, "
            "which LIVEMART_REQUIRE_SERVICES=1 turns into a failure:"
        )
        for nodeid in self.skipped:
            terminalreporter.write_line(f"  {nodeid}")


def pytest_configure(config: pytest.Config) -> None:
    required = os.environ.get("LIVEMART_REQUIRE_SERVICES") == "1"
    config.pluginmanager.register(ServiceGuard(required), "livemart-service-guard")


def _stop_on_missing(exc: MissingService) -> NoReturn:
    pytest.exit(f"livemart tests need a server that is not available: {exc}", returncode=1)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if set, else a private redis-server for this session."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    try:
        server = RedisServer()
    except MissingService as exc:
        _stop_on_missing(exc)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL URL allowed to CREATE DATABASE: DATABASE_URL, or a private cluster."""
    given = postgres_admin_from_env(os.environ.get("DATABASE_URL"))
    if given:
        yield given
        return
    try:
        cluster = PostgresCluster()
    except MissingService as exc:
        _stop_on_missing(exc)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def livemart(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Factory for `livemart serve` processes: `server = livemart(database_url=..., ...)`."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


@pytest.fixture
def redis_prefix(redis_url: str, livemart: ProcessGroup) -> Iterator[str]:
    """A key prefix of this test's own; its keys, and only those, are deleted afterwards."""
    prefix = unique_prefix()
    yield prefix
    livemart.kill_all()  # servers must stop writing before their keys are removed
    delete_prefixed(redis_url, prefix)


@pytest.fixture
def postgres_url(postgres_admin_url: str, livemart: ProcessGroup) -> Iterator[str]:
    """A fresh PostgreSQL database (postgresql+asyncpg URL), dropped afterwards."""
    name = unique_database_name()
    create_database(postgres_admin_url, name)
    try:
        yield database_url_for(postgres_admin_url, name)
    finally:
        livemart.kill_all()
        drop_database(postgres_admin_url, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every storage backend in turn, so one contract test covers them all."""
    fixture = "postgres_url" if request.param == "postgres" else "sqlite_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A private three-master Redis Cluster, started from the redis-server binary."""
    try:
        nodes = RedisClusterNodes()
    except MissingService as exc:
        _stop_on_missing(exc)
    yield nodes
    nodes.stop()


def redis_under_test(request: pytest.FixtureRequest, kind: str) -> tuple[str, str]:
    """URL and key prefix for a ``redis`` or ``cluster`` variant of a parametrized fixture.

    The cluster is this session's own, so a fresh prefix is enough there; on the shared
    Redis the ``redis_prefix`` fixture also cleans up after the test.
    """
    if kind == "cluster":
        url: str = request.getfixturevalue("redis_cluster").url
        return url, unique_prefix()
    return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> BrokerKind:
    """Every broker in turn: the in-process one and Redis (with this test's prefix)."""
    if request.param == "redis":
        return BrokerKind(
            name="redis",
            redis_url=request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
        )
    return BrokerKind(name="memory", redis_url=None, prefix=unique_prefix())
