"""Kubernetes misbehaving: 409 conflicts and 500s on Secret and status writes, the API server
unreachable right after Lucid answered a refresh, and watch streams dropped again and again.
Nothing may be lost and no refresh may use a dead token (a double refresh shows up as a real
invalid_grant at Lucid)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from .world import LONG, SHORT, Size, World, run_scenarios, summary

WRITE_FAULTS = [
    ("PATCH", r"/secrets/[^/?]*-lucidgrant-state", 409),
    ("PATCH", r"/secrets/[^/?]*-lucidgrant-state", 500),
    ("PATCH", r"/secrets/tok-", 409),
    ("PATCH", r"/secrets/tok-", 500),
    ("PATCH", r"/lucidgrants/[^/?]+/status", 409),
    ("PATCH", r"/lucidgrants/[^/?]+/status", 500),
]


def _write_faults(w: World, window: float) -> tuple[str, str]:
    rng = random.Random(7)
    added = 0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        method, regex, status = rng.choice(WRITE_FAULTS)
        count = rng.randint(1, 3)
        w.kube.faults.add(method, regex, status=status, count=count)
        added += count
        time.sleep(0.25)
    w.kube.faults.clear()
    faulted = sum(1 for r in list(w.kube.requests) if r.verb == "patch" and r.code in (409, 500))
    return (
        "kube.faults.add(PATCH state/consumer Secret or grant status, 409|500), 1-3 at a "
        "time every 0.25 s",
        f"{faulted} writes refused (of {added} armed)",
    )


def _unreachable_after_answer(w: World, window: float) -> tuple[str, str]:
    # Lucid rotates at once and answers 1.5 s later; the API server goes away as soon as a
    # rotation happens and comes back 3 s later: the answer arrives while it is unreachable.
    w.lucid.faults.slow(1.5, process_first=True)
    cycles = 0
    deadline = time.monotonic() + window
    seen = len(w.rotated_at)
    while time.monotonic() < deadline:
        if len(w.rotated_at) == seen:
            time.sleep(0.02)
            continue
        w.kube.faults.unreachable = True
        time.sleep(3.0)
        w.kube.faults.unreachable = False
        cycles += 1
        time.sleep(0.5)
        seen = len(w.rotated_at)
    w.lucid.faults.clear()
    return (
        "Lucid slow(1.5 s, process_first) + API server unreachable for 3 s from each rotation",
        f"{cycles} outages of the API server",
    )


def _watch_drops(w: World, window: float) -> tuple[str, str]:
    drops = streams = 0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        streams += w.kube.drop_watches()
        drops += 1
        time.sleep(0.5)
    return "kube.drop_watches() every 0.5 s", f"{drops} drops ({streams} streams cut)"


CASES = {
    "kube-write-409-500": ("409 and 500 on Secret and status writes", _write_faults),
    "kube-unreachable-after-answer": (
        "API server unreachable right after Lucid answered",
        _unreachable_after_answer,
    ),
    "kube-watch-drops": ("watch streams dropped repeatedly", _watch_drops),
}


def one_fault(w: World, size: Size, scenario: str) -> None:
    fault, inject = CASES[scenario]
    window = size.fault_s * 1.5
    rotations = w.rotations()
    t0 = time.time()
    how, count = inject(w, window)
    calls = w.calls_between(t0, time.time())
    rotated = w.rotations() - rotations
    limit = 30.0
    try:
        recovery: float | None = w.wait_serving(limit * 2, f"recovery from {scenario}")
    except AssertionError:
        recovery = None
    alive = all(p.proc.poll() is None for p in w.procs)
    views = w.views()
    lost = w.lost_for_good(views)
    flagged = sorted(n for n, v in views.items() if v.reauth)
    stuck = w.stuck_for_good(views)
    windows = w.windows()
    row = summary(
        w,
        scenario,
        fault=fault,
        injection=how,
        count=count,
        lost=len(lost),
        flagged=len(flagged),
        recovery_s=recovery,
        calls=calls,
        successful_refreshes_during_fault=rotated,
        answer_to_store_max_s=round(max(windows), 2) if windows else None,
    )
    assert alive, "the operator died"
    assert not lost, f"grants lost: {lost}"
    assert not flagged, f"grants flagged for re-authorization: {flagged}"
    assert row["invalid_grant"] == 0, "a refresh used a dead token (double refresh?)"
    assert rotated > 0, "no refresh happened during the fault"
    assert recovery is not None and not stuck, f"not serving after the fault: {stuck}"
    assert recovery <= limit, f"recovery took {recovery:.1f} s, bound {limit:.1f} s"


def test_kube_faults_short(tmp_path: Path) -> None:
    run_scenarios(tmp_path, SHORT, list(CASES), one_fault)


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", list(CASES))
def test_kube_fault_long(tmp_path: Path, scenario: str) -> None:
    run_scenarios(tmp_path, LONG, [scenario], one_fault)
