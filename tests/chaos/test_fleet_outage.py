"""A Lucid outage of three access-token lifetimes at fleet scale, against the real operator
process: what Lucid sees during it, how fast every grant serves a live token again after it,
and what it costs (refresh tokens lost, grants flagged: both must be 0).

    LUCIDGRANT_OUTAGE_GRANTS=1000 LUCIDGRANT_OUTAGE_TTL=40 .venv/bin/pytest -q -m chaos \
        tests/chaos/test_fleet_outage.py -s

prints one CHAOS-RESULT line with the figures docs/lucid-outages.md quotes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from bench.outage import peak_rate

from .world import Size, percentile, summary, world

GRANTS = int(os.environ.get("LUCIDGRANT_OUTAGE_GRANTS", "100"))
TTL = float(os.environ.get("LUCIDGRANT_OUTAGE_TTL", "30"))
# Every grant has expired by the end of an outage this long; after it, a grant must serve a
# live token within this many seconds.
OUTAGE = 3 * TTL
RECOVERY_LIMIT = 120.0


@pytest.mark.chaos
def test_fleet_outage_of_three_lifetimes(tmp_path: Path) -> None:
    size = Size("fleet", GRANTS, TTL, 0.0, OUTAGE, 0, 0)
    with world(tmp_path, size) as w:
        w.add_grants()
        # A generous deadline: on a loaded machine a 3 s one loses answers Lucid already rotated
        # for, which is not what this scenario measures.
        w.start_operator(LUCIDGRANT_LUCID_TIMEOUT="15")
        w.wait_serving(60 + GRANTS / 20, "every grant serving before the outage")
        time.sleep(TTL)  # a lifetime of routine refreshes, so that expiries are spread
        w.lucid.faults.outage(OUTAGE)
        down = time.time()
        time.sleep(OUTAGE)
        w.lucid.faults.clear()
        up = time.time()
        calls_during = w.calls_between(down, up)
        served: dict[str, float] = {}
        deadline = time.monotonic() + RECOVERY_LIMIT
        while len(served) < len(w.grants) and time.monotonic() < deadline:
            now = time.time()
            for name, view in w.views().items():
                if name not in served and view.serving:
                    served[name] = now - up
            time.sleep(0.5)
        after = w.views()
        lost = w.lost_for_good(after)
        flagged = sorted(n for n, v in after.items() if v.reauth)
        times = list(served.values())
        row = summary(
            w,
            "lucid-fleet-outage",
            fault=f"outage of 3 access lifetimes ({OUTAGE:.0f} s)",
            injection="LucidEmulator.outage(): 503 + HTML maintenance page on every call",
            count=f"{OUTAGE:.0f} s window",
            lost=len(lost),
            flagged=len(flagged),
            recovery_s=max(times) if len(times) == len(w.grants) else None,
            calls=calls_during,
            calls_per_minute_during_outage=round(calls_during / (OUTAGE / 60), 1),
            recovery_p50_s=round(percentile(times, 0.5), 2),
            recovery_p99_s=round(percentile(times, 0.99), 2),
            peak_calls_per_s_after_return=peak_rate(w.arrivals, up, up + RECOVERY_LIMIT),
            not_serving=len(w.grants) - len(served),
        )
        assert not lost, f"grants lost: {lost}"
        assert not flagged, f"grants flagged for re-authorization: {flagged}"
        assert row["not_serving"] == 0, f"not serving {RECOVERY_LIMIT:.0f} s after the outage"
