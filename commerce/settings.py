"""Settings of the flash-sale domain, read from the environment in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from realtime.config import ConfigError, Env


@dataclass(frozen=True, kw_only=True)
class CommerceSettings:
    """Limits and timings of products, sales, holds and their announcements."""

    #: How often the sweeper looks for expired holds and sales to start or end.
    sweep_interval_s: float = 0.25
    #: How often each process re-reads the list of open sales it sweeps.
    open_sales_refresh_s: float = 2.0
    #: At most one ``stock`` event per sale per process per this interval.
    stock_event_interval_s: float = 0.1
    #: ``purchase`` events per room per process: steady rate and burst; the rest is aggregated.
    purchase_rate_per_s: float = 2.0
    purchase_burst: int = 5
    #: How long aggregated purchases wait before one summary event goes out.
    purchase_window_s: float = 1.0
    #: How long an Idempotency-Key is remembered in the stock ledger (SQL keeps it forever).
    idempotency_ttl_s: int = 25 * 3600
    #: A process that saw a sale sold out lets one attempt through to the ledger this often.
    sold_out_probe_s: float = 0.1
    #: How long a replayed key waits for the first request's SQL row from another process.
    replay_wait_s: float = 2.0
    #: Rebuild missing or stale ledger state from SQL when the process starts.
    reconcile_on_start: bool = True

    max_stock: int = 1_000_000
    max_per_user_limit: int = 1_000
    max_hold_seconds: int = 3_600
    max_price_cents: int = 10_000_000_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommerceSettings:
        env = Env(environ)
        settings = cls(
            sweep_interval_s=env.number("LIVEMART_SWEEP_INTERVAL_S", 0.25),
            open_sales_refresh_s=env.number("LIVEMART_OPEN_SALES_REFRESH_S", 2.0),
            stock_event_interval_s=env.number("LIVEMART_STOCK_EVENT_INTERVAL_S", 0.1),
            purchase_rate_per_s=env.number("LIVEMART_PURCHASE_RATE", 2.0),
            purchase_burst=env.integer("LIVEMART_PURCHASE_BURST", 5),
            purchase_window_s=env.number("LIVEMART_PURCHASE_WINDOW_S", 1.0),
            idempotency_ttl_s=env.integer("LIVEMART_IDEMPOTENCY_TTL_S", 25 * 3600),
            sold_out_probe_s=env.number("LIVEMART_SOLD_OUT_PROBE_S", 0.1),
            replay_wait_s=env.number("LIVEMART_REPLAY_WAIT_S", 2.0),
            reconcile_on_start=env.integer("LIVEMART_RECONCILE_ON_START", 1) != 0,
        )
        if settings.idempotency_ttl_s < 24 * 3600:
            raise ConfigError("LIVEMART_IDEMPOTENCY_TTL_S must be at least 86400 (24 h)")
        if settings.sweep_interval_s <= 0:
            raise ConfigError("LIVEMART_SWEEP_INTERVAL_S must be positive")
        return settings
