"""The four load scenarios, by name."""

from __future__ import annotations

from loadtest.scenarios.base import Scenario
from loadtest.scenarios.comments import Comments
from loadtest.scenarios.flashsale import FlashSale
from loadtest.scenarios.groups import Groups
from loadtest.scenarios.viewers import Viewers

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Viewers(), Comments(), FlashSale(), Groups())}
