"""A pytest plugin for finding where the suite's CPU goes (docs/testing.md): with
`CPU_PER_TEST=FILE .venv/bin/python -m pytest -p tests.cpu_per_test` (python -m puts
the repository on the path), each test appends a line to FILE: CPU seconds (user+sys of the
worker, of the processes it reaped and of those the fork server started for it, such as the
operators it stopped), wall seconds, test id. Not loaded by default."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator

import pytest

from tests import prefork


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    forked = prefork.children_cpu  # the processes the fork server started for this one
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + forked


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    cpu, wall = _cpu(), time.monotonic()
    yield
    with open(os.environ["CPU_PER_TEST"], "a") as out:
        out.write(f"{_cpu() - cpu:.2f}\t{time.monotonic() - wall:.2f}\t{item.nodeid}\n")
