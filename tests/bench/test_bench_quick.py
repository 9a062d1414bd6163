"""The benchmark harness at a tiny size: it runs end to end and its figures are sane."""

from __future__ import annotations

import math
from pathlib import Path

from bench.run import Profile, render, run_size


def test_quick_benchmark_reports_sane_figures(tmp_path: Path) -> None:
    profile = Profile(20, 6.5, "2s", 2.0, duration=22.0, oneshot_samples=1)
    result = run_size(profile, tmp_path, log=lambda _: None)

    assert result["never_adopted"] == 0
    assert result["expired"] == 0, "an access token expired before its refresh"
    assert result["routine_refreshes"] > 0
    assert result["window_refreshes"] > 0
    assert abs(result["lucid_per_refresh"] - 1.0) < 0.05, result["lucid_calls"]
    # A routine refresh reads nothing from the API server.
    assert not any(k.startswith(("get ", "list ")) for k in result["kube_calls"]), result
    assert result["kube_per_refresh"]["patch secrets"] >= 2.0
    assert 0 < result["operator_cpu_ms"] < result["oneshot"]["cpu_ms"]
    assert 0 < result["operator_rss_mb"] < 400
    assert result["late_p99"] < 2.0
    assert not math.isnan(result["time_to_all_scheduled"])
    assert "| 20 |" in render([result], "pytest")
