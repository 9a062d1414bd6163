"""The order in which tests are handed to the pytest-xdist workers of `make test`: the longest
first, so that no worker starts a minute-long test while the others have run out of work; the
in-process tests (milliseconds each) fill the gaps at the end. The list names the tests that
took 25 s or more (`pytest --durations=20`), then whole kinds; a test missing from it only runs
later. Each file's tests stay in their order."""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "tests/e2e/test_real_server.py::test_watch_errors_are_survived",
    "tests/chaos/test_lucid_faults.py",
    "tests/bench/",
    "tests/property/test_lucid_bodies.py",
    "tests/e2e/test_demo.py",
    "tests/e2e/test_ha.py",
    "tests/chaos/",
    "tests/e2e/",
    "tests/property/",
    "tests/observability/",
)


def _rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: pytest's order within a rank
