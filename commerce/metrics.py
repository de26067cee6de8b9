"""Prometheus metrics of the flash-sale domain, registered in the core's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from .ledger import Outcome


class CommerceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "livemart_reservation_attempts",
            "Reservation attempts by outcome (held, replay, sold_out, …)",
            ["outcome"],
            registry=registry,
        )
        #: One child per outcome, bound once: ``labels()`` costs more than the count itself.
        self.attempts_by_outcome = {o: self.attempts.labels(o.value) for o in Outcome}
        self.fast_rejects = Counter(
            "livemart_reservation_fast_rejects",
            "Attempts answered sold_out from the local flag, without the ledger",
            registry=registry,
        )
        self.undone = Counter(
            "livemart_reservation_undone",
            "Holds the ledger granted but SQL refused (fenced), given back",
            ["reason"],
            registry=registry,
        )
        self.expired = Counter(
            "livemart_holds_expired", "Unconfirmed holds returned to stock by the sweeper", registry=registry
        )
        self.orders = Counter("livemart_orders", "Orders created", registry=registry)
        self.rebuilds = Counter(
            "livemart_ledger_rebuilds",
            "Sales whose ledger state was rebuilt from SQL",
            ["reason"],
            registry=registry,
        )
