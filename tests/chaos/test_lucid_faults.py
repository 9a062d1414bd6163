"""Lucid misbehaving: outages, rate limits, 5xx, HTML and malformed bodies, answers slower than
the client timeout, and flaky invalid_grant. Nothing may be lost, no grant may be flagged for a
person, every grant must serve a live token again within a bound after the fault, and the
calls made during the fault must stay within what the backoff allows."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lucidgrant_testbed.lucid import LucidEmulator

from .world import (
    LONG,
    SHORT,
    Size,
    World,
    max_attempts,
    recovery_bound,
    run_scenarios,
    summary,
)

Inject = Callable[[LucidEmulator, float], str]


def _outage(lucid: LucidEmulator, window: float) -> str:
    lucid.faults.outage(window)
    return "LucidEmulator.outage(): 503 + HTML maintenance page on every call"


def _storm(status: int, retry_after: float | None = None) -> Inject:
    def inject(lucid: LucidEmulator, window: float) -> str:
        lucid.faults.fail_next(100_000, status, retry_after=retry_after)
        ra = f", Retry-After: {retry_after:.0f}" if retry_after is not None else ", no Retry-After"
        return f"fail_next({status}{ra}) on every call"

    return inject


def _five_xx(lucid: LucidEmulator, window: float) -> str:
    for _ in range(5_000):
        for status in (500, 502, 503, 504):
            lucid.faults.fail_next(1, status)
    return "fail_next cycling 500/502/503/504 on every call"


def _bodies(lucid: LucidEmulator, window: float) -> str:
    for _ in range(4_000):
        lucid.faults.html_next(1)
        lucid.faults.malformed_next(1)
        lucid.faults.fail_next(1, 200, body="empty")
        lucid.faults.fail_next(1, 502, body="html")
        lucid.faults.fail_next(1, 404, body="html")
    return "200 HTML / 200 truncated JSON / 200 empty / 502 HTML / 404 HTML, cycling"


def _slow(lucid: LucidEmulator, window: float) -> str:
    lucid.faults.slow(5.0)
    return "slow(5 s) on every call, client timeout 3 s (request dropped when the client leaves)"


def _flaky(lucid: LucidEmulator, window: float) -> str:
    lucid.faults.flaky_invalid_grant(0.3)  # unseeded: a new draw every run
    return "flaky_invalid_grant(p=0.3): 400 invalid_grant for a live token, no rotation"


def one_fault(w: World, size: Size, scenario: str) -> None:
    fault, inject, opts = CASES[scenario]
    window = size.outage_s if opts.get("outage") else size.fault_s
    if opts.get("flaky"):
        # Flaky answers are random: long enough for dozens of refreshes and ~20 flaky answers.
        window = size.outage_s if size.long else size.outage_s * 1.5
    retry_after = None
    if opts.get("ra"):
        retry_after = 3.0 if not size.long else 12.0
        inject = _storm(429, retry_after)
    backoff_bound = not opts.get("flaky")
    before = w.refresh_calls()
    rotations = w.rotations()
    flaky_before = w.lucid.flaky_invalid_grant_count
    how = inject(w.lucid, window)
    t0 = time.time()  # the fault is fully on from here
    time.sleep(window)
    w.lucid.faults.clear()
    t1 = time.time()
    during = w.refresh_calls() - before
    calls = w.calls_between(t0, t1)
    rotated_during = w.rotations() - rotations
    limit = recovery_bound(window, retry_after)
    try:
        recovery: float | None = w.wait_serving(limit * 2 + 30, f"recovery from {scenario}")
    except AssertionError:
        recovery = None
    views = w.views()
    lost = w.lost_for_good(views)
    flagged = sorted(n for n, v in views.items() if v.reauth)
    stuck = w.stuck_for_good(views)
    per_grant = max_attempts(window, retry_after, size.access_ttl)
    bound = size.grants * per_grant if backoff_bound else None
    row = summary(
        w,
        scenario,
        fault=fault,
        injection=how,
        count=f"{window:.0f} s window",
        lost=len(lost),
        flagged=len(flagged),
        recovery_s=recovery,
        calls=calls,
        bound=bound,
        recovery_bound_s=round(limit, 1),
        per_grant_attempt_bound=per_grant if backoff_bound else None,
        successful_refreshes_during_fault=rotated_during,
        flaky_answers=w.lucid.flaky_invalid_grant_count - flaky_before,
        statuses_answered_during_fault=dict(sorted(during.items())),
    )
    assert not lost, f"grants lost: {lost}"
    assert not flagged, f"grants flagged for re-authorization: {flagged} ({row})"
    assert row["invalid_grant"] == 0, "a refresh used a dead token (double refresh?)"
    assert recovery is not None and not stuck, f"not serving after the fault: {stuck}"
    assert recovery <= limit, f"recovery took {recovery:.1f} s, bound {limit:.1f} s"
    if bound is not None:
        assert calls <= bound, f"{calls} calls during the fault, bound {bound}"


CASES: dict[str, tuple[str, Inject, dict[str, object]]] = {
    "lucid-outage": ("outage > 2 access-token lifetimes", _outage, {"outage": True}),
    "lucid-429": ("429 storm without Retry-After", _storm(429), {}),
    "lucid-429-retry-after": ("429 storm with Retry-After", _storm(429, 0.0), {"ra": True}),
    "lucid-5xx": ("5xx burst", _five_xx, {}),
    "lucid-bodies": ("HTML and malformed bodies", _bodies, {}),
    "lucid-slow": ("answers slower than the client timeout", _slow, {}),
    "lucid-flaky-invalid-grant": ("intermittent invalid_grant, 30 %", _flaky, {"flaky": True}),
}


TRANSIENT = [c for c in CASES if c != "lucid-flaky-invalid-grant"]


def test_lucid_transient_faults_short(tmp_path: Path) -> None:
    run_scenarios(tmp_path, SHORT, TRANSIENT, one_fault)


def test_lucid_flaky_invalid_grant_short(tmp_path: Path) -> None:
    run_scenarios(tmp_path, SHORT, ["lucid-flaky-invalid-grant"], one_fault)


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", list(CASES))
def test_lucid_fault_long(tmp_path: Path, scenario: str) -> None:
    run_scenarios(tmp_path, LONG, [scenario], one_fault)
