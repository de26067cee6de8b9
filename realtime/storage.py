"""SQL storage: one async engine per process, and Alembic migrations.

Each domain owns its tables and its migration branch (a ``migrations/versions``
folder in its package); :func:`migrate` upgrades every branch to its head. SQLite
gets WAL and a busy timeout so that readers never block the single writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import ProtocolError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine tuned for the dialect behind ``url``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=5
    )


class Database:
    """The engine plus the error mapping every domain wants."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.dialect = make_url(url).get_backend_name()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction; an unreachable database becomes ``unavailable``."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except PoolTimeout as exc:
            raise ProtocolError("unavailable", "database busy: no connection free in time") from exc
        except (OperationalError, DBAPIError, OSError) as exc:
            if isinstance(exc, DBAPIError) and not _is_outage(exc):
                raise
            raise ProtocolError("unavailable", "database unavailable") from exc

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


#: SQLSTATE classes that mean "the database cannot serve now", not "your query is wrong":
#: connection exceptions, insufficient resources (too many clients), operator intervention.
OUTAGE_SQLSTATE_CLASSES = ("08", "53", "57")


def _is_outage(exc: DBAPIError) -> bool:
    """Connection-level failures (as opposed to constraint violations)."""
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES:
        return True
    return "connection" in str(exc.orig).lower()


def alembic_config(url: str, version_locations: Sequence[Path]) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", " ".join(str(p) for p in version_locations))
    config.set_main_option("path_separator", "space")
    config.attributes["database_url"] = url
    return config


async def migrate(url: str, version_locations: Sequence[Path]) -> None:
    """Upgrade every domain's branch to head (Alembic runs in a worker thread)."""
    config = alembic_config(url, version_locations)
    await asyncio.to_thread(command.upgrade, config, "heads")
