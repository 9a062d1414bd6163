"""The operator process dying: SIGKILL and SIGTERM at random moments over many rotations, and
two processes running by mistake (no peering, no leader election)."""

from __future__ import annotations

import random
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import logged_tokens, wait_for

from .world import LOCK_TTL, LONG, SHORT, GrantView, Size, percentile, summary, world


def where_lost(
    unstored: dict[str, float],
    answered_at: dict[str, float],
    lives: list[tuple[float, float]],
    logged: set[str],
) -> dict[str, Any]:
    """Where each refresh token that never reached a state Secret was when its process was
    killed, along its way: the request reached Lucid, Lucid minted the token, Lucid handed the
    answer to the socket, the process read it, parsed it and appended it to its log.

    - minted after the kill: the request was queued in Lucid when the process died; no
      process received the answer;
    - still inside Lucid: minted while the process lived, the answer not yet written out;
    - unread by the process: the answer was in the process's socket buffer, not in its log
      (reading, parsing and appending run without a pause in between: the process had not
      yet read it); with how long it had been there;
    - in the log: the process had it safe (lost only when the log went with the pod)."""
    counts = dict.fromkeys(("after_the_kill", "inside_lucid", "unread", "in_the_log"), 0)
    unread_ms: list[float] = []
    for token, minted in unstored.items():
        killed = next((k for s, k in lives if s <= minted <= k), None)
        sent = answered_at.get(token)
        if killed is None:
            counts["after_the_kill"] += 1
        elif token in logged:
            counts["in_the_log"] += 1
        elif sent is None or sent > killed:
            counts["inside_lucid"] += 1
        else:
            counts["unread"] += 1
            unread_ms.append(round((killed - sent) * 1000, 1))
    return {
        **{f"lost_{where}": n for where, n in counts.items()},
        "unread_for_ms": sorted(unread_ms),
    }


def restarts(tmp: Path, size: Size, sig: signal.Signals, wal: str | None = None) -> None:
    """Start the operator, let it run a random while, send `sig`, again and again until enough
    rotations and kills happened; then start it once more and see what needs a person.

    `wal`: None runs without a write-ahead log; "kept" gives every process the same log
    directory (a container restart); "wiped" deletes it after each kill (the pod lost)."""
    scenario = f"process-{sig.name.lower()}" + (f"-wal-{wal}" if wal else "")
    wal_dir = tmp / "wal"
    env = {"LUCIDGRANT_WAL_DIR": str(wal_dir)} if wal else {}
    with world(tmp, size) as w:
        w.add_grants()
        if sig == signal.SIGTERM:
            # Lucid rotates at once and answers 0.5 s later: most SIGTERMs land while some
            # refresh's answer is on its way, the moment that matters.
            w.lucid.faults.slow(0.5, process_first=True)
        rng = random.Random(1234 if sig == signal.SIGKILL else 4321)
        kills: list[float] = []
        codes: list[int] = []
        lives: list[tuple[float, float]] = []  # each killed process: started, killed
        logged: set[str] = set()  # refresh tokens found in the log after a kill (before a wipe)
        deadline = time.monotonic() + (900 if size.long else 150)
        while (w.rotations() < size.rotations or len(kills) < size.kills) and (
            time.monotonic() < deadline
        ):
            started_at = time.time()
            proc = w.start_operator(**env)
            time.sleep(rng.uniform(0.5, 4.0))
            w.scrape(proc)
            # The moment of the signal itself: the scrape before it can take seconds on a busy
            # machine, and tokens minted meanwhile are still lost to this kill.
            kills.append(time.time())
            codes.append(proc.stop(sig))
            lives.append((started_at, kills[-1]))
            logged |= logged_tokens(wal_dir)
            if wal == "wiped":
                shutil.rmtree(wal_dir, ignore_errors=True)
        w.lucid.faults.clear()
        rotations = w.rotations()
        # Afterwards: one more start; every grant either serves again or is flagged. The verdict
        # waits until the new process has dealt with every grant (rotated it and serves it, or
        # flagged it): a grant still serving the killed process's token proves nothing yet.
        w.start_operator(**env)
        started = time.monotonic()
        rotated_before = {name: w.lucid.grant_info(g).rotations for name, g in w.grants.items()}

        def dealt_with(v: GrantView) -> bool:
            if v.lost:
                return v.reauth
            return v.serving and w.lucid.grant_info(v.grant_id).rotations > rotated_before[v.name]

        verdicts: dict[str, bool] = {}

        def every_grant_dealt_with() -> bool:
            verdicts.update({name: dealt_with(v) for name, v in w.views().items()})
            return all(verdicts.values())

        try:
            wait_for(every_grant_dealt_with, LOCK_TTL + 30, 0.25, "recovery after the restart")
            recovery: float | None = time.monotonic() - started
        except AssertionError:
            recovery = None
        w.stop_all()
        views = w.views()
        # Lost grants cannot serve again (that is what lost means); every other one must.
        stuck = sorted(n for n, ok in verdicts.items() if not ok and not views[n].lost)
        lost = sorted(n for n, v in views.items() if v.lost)
        flagged = sorted(n for n, v in views.items() if v.reauth)
        windows = w.windows()
        unstored = w.unstored()
        # A loss is explained only by a kill landing between Lucid minting the token and the
        # store: a kill within 5 s after the mint (the store takes milliseconds when alive), or
        # up to 1 s before it (a request already sent when the kill landed is still answered).
        unexplained = [
            t for t, at in unstored.items() if not any(at - 1 <= k <= at + 5 for k in kills)
        ]
        where = where_lost(unstored, w.answered_at.copy(), lives, logged)
        # With the log kept, a token that reached it is never lost.
        replay_failed = sorted(t[:6] for t in unstored if t in logged) if wal == "kept" else []
        row = summary(
            w,
            scenario,
            fault=f"{sig.name} at random moments",
            injection=f"{sig.name} after uniform(0.5, 4) s of running, then restart"
            + (" (Lucid answers 0.5 s after rotating)" if sig == signal.SIGTERM else ""),
            count=f"{len(kills)} {sig.name}s over {rotations} rotations",
            lost=len(lost),
            flagged=len(flagged),
            recovery_s=recovery,
            exit_codes=sorted(set(codes)),
            window_p50_ms=round(percentile(windows, 0.5) * 1000, 1),
            window_p99_ms=round(percentile(windows, 0.99) * 1000, 1),
            window_max_ms=round(max(windows) * 1000, 1) if windows else None,
            tokens_never_stored=len(unstored),
            **where,
            unexplained_losses=len(unexplained),
            seconds_after_restart=round(time.monotonic() - started, 1),
        )
        assert not stuck, f"grants neither serving again nor flagged after the restart: {stuck}"
        assert set(flagged) == set(lost), "a grant flagged for a person was not lost (or back)"
        assert not unexplained, "a refresh token was lost without a kill in its window"
        if sig == signal.SIGTERM:
            assert set(codes) == {0}, f"exit codes {codes}"
            assert not lost, f"SIGTERM lost grants: {lost}"
            assert row["invalid_grant"] == 0
        elif wal == "kept":
            assert not replay_failed, f"logged refresh tokens never stored: {replay_failed}"
        else:
            assert len(lost) <= len(kills)
        assert row["rotations"] >= size.rotations


# The short SIGKILL run keeps the log, as deployed; the long run shows kept and wiped (a pod
# lost, or no log at all: the same window) side by side.
@pytest.mark.parametrize(
    ("sig", "wal"),
    [(signal.SIGKILL, "kept"), (signal.SIGTERM, None)],
    ids=["sigkill-wal-kept", "sigterm"],
)
def test_restarts_short(tmp_path: Path, sig: signal.Signals, wal: str | None) -> None:
    restarts(tmp_path, SHORT, sig, wal)


@pytest.mark.chaos
@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    ("sig", "wal"),
    [(signal.SIGKILL, "kept"), (signal.SIGKILL, "wiped"), (signal.SIGTERM, None)],
    ids=["sigkill-wal-kept", "sigkill-wal-wiped", "sigterm"],
)
def test_restarts_long(tmp_path: Path, sig: signal.Signals, wal: str | None) -> None:
    restarts(tmp_path, LONG, sig, wal)


def _lock_busy(metrics: str) -> float:
    match = re.search(r'^lucidgrant_refresh_total\{result="lock_busy"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


def two_processes(tmp: Path, size: Size) -> None:
    window = size.fault_s * (3 if size.long else 1.5)
    with world(tmp, size) as w:
        w.add_grants()
        first = w.start_operator()
        second = w.start_operator()
        w.wait_serving(60, "every grant serving")
        rotations = w.rotations()
        time.sleep(window)
        both_alive = first.proc.poll() is None and second.proc.poll() is None
        busy = _lock_busy(w.scrape(first)) + _lock_busy(w.scrape(second))
        rotated = w.rotations() - rotations
        recovery = w.wait_serving(30, "every grant serving at the end")
        w.stop_all()
        views = w.views()
        lost = sorted(n for n, v in views.items() if v.lost)
        flagged = sorted(n for n, v in views.items() if v.reauth)
        row = summary(
            w,
            "two-processes",
            fault="two active operators by mistake",
            injection="two `lucidgrant run` processes, no peering, no leader election",
            count=f"{window:.0f} s, {rotated} rotations",
            lost=len(lost),
            flagged=len(flagged),
            recovery_s=recovery,
            double_refreshes=w.lucid.invalid_grant_count,
            lock_busy=busy,
        )
        assert both_alive
        assert w.lucid.invalid_grant_count == 0, "double refreshes"
        assert not lost and not flagged
        assert row["rotations"] > 0 and rotated >= size.grants


def test_two_processes_short(tmp_path: Path) -> None:
    two_processes(tmp_path, SHORT)


@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_two_processes_long(tmp_path: Path) -> None:
    two_processes(tmp_path, LONG)
