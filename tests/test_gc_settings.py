"""The collector settings applied once the app has started (realtime.server)."""

from __future__ import annotations

import gc
import warnings

from realtime.server import GC_THRESHOLDS, settle_garbage_collector

CPYTHON_DEFAULT = (700, 10, 10)


def test_startup_objects_are_frozen_and_full_collections_made_rare() -> None:
    """(Earlier in-process app tests may have applied the setting already.)"""
    with warnings.catch_warnings():
        # Garbage of earlier tests (a failed one's sockets, say) is not this test's to report.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    before = gc.get_threshold()
    survivor = [object() for _ in range(100)]  # alive at "startup"
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() >= len(survivor)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[2] > CPYTHON_DEFAULT[2]  # full collections rarer than by default
        cycle: list[object] = []
        cycle.append(cycle)  # garbage made after startup is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
