"""pytest plugin for the private copies of ``make mutate`` (copied there as ``tests/mutate_fast_first.py``).

mutmut stops a mutant's run at the first failing test; this runs the tests in the order of their clean durations
(mutmut's ``mutmut-stats.json``), fastest first, so that a killed mutant is known after its fastest failing test
instead of after whatever slow socket test the set order put first. No effect before mutmut has measured the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    stats = Path("mutmut-stats.json")
    if not stats.exists():
        return
    durations: dict[str, float] = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
