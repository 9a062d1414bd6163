"""Turning what a run observed into figures, and figures into the markdown table."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.setup import BenchGrant

Record = tuple[str, float, float]  # (lucid grant id, refreshed at, previous access expiry)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def due_offset(access_ttl: float, refresh_before: float, jitter: float) -> float:
    """Seconds between the due time and the access token's real expiry at Lucid, as the
    operator computes it (lucidgrant.timing.refresh_due_at): the margin is
    min(refreshBefore, lifetime / 3) where the lifetime is Lucid's `expires_in`, rounded down to
    whole seconds; the operator's expiry is that much earlier than Lucid's; the jitter moves the
    due time earlier by up to a tenth of the margin."""
    lifetime = math.floor(access_ttl)
    margin = max(0.0, min(refresh_before, lifetime / 3.0))
    return (access_ttl - lifetime) + margin + 0.1 * margin * jitter


def punctuality(
    records: Iterable[Record],
    grants: Mapping[str, BenchGrant],
    access_ttl: float,
    refresh_before: float,
    end: float,
    steady_from: float | None = None,
) -> dict[str, Any]:
    """Lateness of every routine refresh (each grant's refreshes after its first, the
    adoption of the bootstrap token) against its due time and against the old token's expiry."""
    by_grant: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        if rec[0] in grants:
            by_grant[rec[0]].append(rec)
    late_due: list[float] = []
    late_expiry: list[float] = []
    late_steady: list[float] = []
    expired_before_refresh = 0
    for gid, recs in by_grant.items():
        recs.sort(key=lambda r: r[1])
        offset = due_offset(access_ttl, refresh_before, grants[gid].jitter)
        for _, at, prev_exp in recs[1:]:
            late_due.append(at - (prev_exp - offset))
            if steady_from is not None and at >= steady_from:
                late_steady.append(at - (prev_exp - offset))
            late_expiry.append(at - prev_exp)
            if at > prev_exp:
                expired_before_refresh += 1
    # A grant whose last token expired before the end without a refresh counts as well.
    never = [g for g in grants if g not in by_grant]
    unrefreshed = len(never) + sum(
        1 for recs in by_grant.values() if recs[-1][1] + access_ttl < end
    )
    return {
        "routine_refreshes": len(late_due),
        "late_p50": percentile(late_due, 50),
        "late_p99": percentile(late_due, 99),
        "late_max": max(late_due) if late_due else math.nan,
        "steady_late_p99": percentile(late_steady, 99),
        "steady_late_max": max(late_steady) if late_steady else math.nan,
        "before_expiry_min": -max(late_expiry) if late_expiry else math.nan,
        "expired": expired_before_refresh + unrefreshed,
        "never_adopted": len(never),
        "first_refresh": {gid: recs[0][1] for gid, recs in by_grant.items()},
    }


def kube_delta(before: list[list[Any]], after: list[list[Any]]) -> Counter[str]:
    """Requests between two /_emulator/stats snapshots, keyed 'verb resource[/sub]'."""

    def counts(rows: list[list[Any]]) -> Counter[str]:
        out: Counter[str] = Counter()
        for verb, resource, sub, _code, n in rows:
            out[f"{verb} {resource}{'/' + sub if sub else ''}"] += int(n)
        return out

    return counts(after) - counts(before)


def lucid_calls(stats: Mapping[str, Any]) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in stats["calls"]:
        out[row["endpoint"]] += int(row["count"])
    return out


def _f(value: float, digits: int = 2) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def table(results: Sequence[Mapping[str, Any]]) -> str:
    header = (
        "| grants | access TTL / refreshBefore | routine refreshes | refreshes/s "
        "| late vs due p50 / p99 / max (s) | expired tokens | Lucid calls per refresh "
        "| Kubernetes calls per refresh | operator CPU ms per refresh "
        "| operator RSS MB (KB per grant) | start to all grants scheduled (s) "
        "| kube emulator / Lucid emulator CPU ms per refresh |"
    )
    lines = [header, "|" + " --- |" * 12]
    for r in results:
        kube = (
            ", ".join(f"{k} {v:.2f}" for k, v in r["kube_per_refresh"].items() if v >= 0.005)
            or "n/a"
        )
        lines.append(
            f"| {r['n']:,} | {r['access_ttl']:g}s / {r['refresh_before']} "
            f"| {r['routine_refreshes']:,} | {_f(r['refreshes_per_s'], 1)} "
            f"| {_f(r['late_p50'])} / {_f(r['late_p99'])} / {_f(r['late_max'])} "
            f"| {r['expired']} | {_f(r['lucid_per_refresh'], 3)} | {kube} "
            f"| {_f(r['operator_cpu_ms'])} "
            f"| {r['operator_rss_mb']:.0f} ({_f(r['rss_kb_per_grant'], 1)}) "
            f"| {_f(r['time_to_all_scheduled'], 1)} "
            f"| {_f(r['kubeapi_cpu_ms'])} / {_f(r['lucid_cpu_ms'])} |"
        )
    return "\n".join(lines)


def baseline_table(results: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| grants | one-shot CPU ms per refresh (samples) | one-shot wall ms | "
        "operator CPU ms per refresh | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        one = r.get("oneshot") or {}
        if not one.get("samples"):
            continue
        ratio = one["cpu_ms"] / r["operator_cpu_ms"] if r["operator_cpu_ms"] else math.nan
        lines.append(
            f"| {r['n']:,} | {one['cpu_ms']:.0f} ({one['samples']}) | {one['wall_ms']:.0f} "
            f"| {_f(r['operator_cpu_ms'])} | {_f(ratio, 0)}x |"
        )
    return "\n".join(lines)
