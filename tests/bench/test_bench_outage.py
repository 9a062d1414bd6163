"""The outage scenario of the benchmark at a tiny size: it runs end to end, nothing is lost or
flagged, and during the outage Lucid sees probes, not one retry schedule per grant."""

from __future__ import annotations

import math
from pathlib import Path

from bench.outage import row, run_outage

from lucidgrant.lucid_health import PROBE_INTERVAL

GRANTS = 10


def test_short_outage_loses_nothing_and_only_probes(tmp_path: Path) -> None:
    result = run_outage(GRANTS, tmp_path, log=lambda _: None, access_ttl=4.5)

    assert result["lost"] == 0, result["wrong"]
    assert result["flagged"] == 0, result["wrong"]
    assert result["not_served_in_limit"] == 0
    assert result["not_serving_at_end"] == 0, result["wrong"]
    # Each grant's refresh in flight when the gate closed, then one probe per interval. Without
    # the gate each grant retries on its own backoff (1-2 s, 2-4 s, ...): about 4 calls each.
    bound = GRANTS + math.ceil(result["outage_s"] / PROBE_INTERVAL) + 1
    assert result["calls_during_outage"] <= bound, result["calls_during_outage_by_endpoint"]
    assert result["peak_refreshes_per_s"] >= 1
    assert f"| {GRANTS} (4.5 s" in row(result)
