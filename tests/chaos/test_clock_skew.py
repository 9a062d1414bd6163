"""Lucid's clock minutes ahead of or behind the operator's: the operator computes expiry from
`expires_in` on its own clock, so every refresh still happens before the old access token
expires, as Lucid itself sees it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .world import LONG, SHORT, Size, summary, world


def clock_skew(tmp: Path, size: Size, skew: float) -> None:
    window = size.fault_s * (3 if size.long else 1)

    def clock() -> float:
        return time.time() + skew

    with world(tmp, size, clock=clock) as w:
        w.add_grants()
        w.start_operator()
        w.wait_serving(60, "every grant serving")
        time.sleep(window)
        w.wait_serving(30, "every grant serving at the end")
        w.stop_all()
        views = w.views()
        lost = sorted(n for n, v in views.items() if v.lost)
        flagged = sorted(n for n, v in views.items() if v.reauth)
        seen: set[str] = set()
        margins = []
        for record in w.lucid.refresh_records():
            if record.grant_id in seen:  # the first is the import of a bootstrap token
                margins.append(record.previous_access_expires_at - record.at)
            seen.add(record.grant_id)
        late = [m for m in margins if m <= 0]
        summary(
            w,
            f"clock-skew{skew:+.0f}s",
            fault=f"Lucid's clock {skew:+.0f} s from the operator's",
            injection=f"LucidEmulator(clock=time.time() {skew:+.0f})",
            count=f"{len(margins)} refreshes",
            lost=len(lost),
            flagged=len(flagged),
            recovery_s=None,
            late_refreshes=len(late),
            min_margin_s=round(min(margins), 2) if margins else None,
        )
        assert margins, "no refresh happened"
        assert not late, f"{len(late)} refreshes after the access token expired (Lucid's view)"
        assert not lost and not flagged


@pytest.mark.parametrize("skew", [300.0, -300.0], ids=["ahead", "behind"])
def test_clock_skew_short(tmp_path: Path, skew: float) -> None:
    clock_skew(tmp_path, SHORT, skew)


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize("skew", [300.0, -300.0], ids=["ahead", "behind"])
def test_clock_skew_long(tmp_path: Path, skew: float) -> None:
    clock_skew(tmp_path, LONG, skew)
