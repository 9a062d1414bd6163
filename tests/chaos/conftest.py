"""Collects every scenario's summary and prints the table at the end of the session; a run that
included the long (chaos-marked) scenarios also writes it to .chaos-results.md."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.harness import ROOT

from .results import RESULTS, details, table

_STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not RESULTS:
        return
    text = table(RESULTS) + "\n\n" + details(RESULTS) + "\n"
    terminalreporter.write_sep("=", "chaos results")
    terminalreporter.write_line(text)
    if any(r.get("size") == "long" for r in RESULTS):
        elapsed = time.monotonic() - _STARTED
        header = (
            "# Chaos results\n\n"
            f"Command: `{' '.join(config.invocation_params.args) or 'pytest'}` "
            f"(exit status {exitstatus}, {elapsed:.0f} s)\n\n"
        )
        (ROOT / ".chaos-results.md").write_text(header + text)
