"""The write-ahead log under the worst timing: Lucid answers a refresh while the API server is
unreachable, the process is killed while it retries the store, and the API server comes back
before the next start. With the log directory kept across restarts nothing may be lost.

(The SIGKILL-at-random-moments rows, with the log kept and wiped, are in test_process.py.)"""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path

import pytest

from tests.e2e.harness import logged_tokens, wait_for

from .world import LONG, SHORT, Size, World, summary, world


def _minted_since(w: World, before: set[str]) -> set[str]:
    return set(w.rotated_at.copy()) - before  # copy(): atomic while the emulator writes


def _answer_logged(w: World, wal_dir: Path, before: set[str]) -> bool:
    """Every token minted since `before` is stored or logged, and one is logged."""
    minted = _minted_since(w, before)
    logged = logged_tokens(wal_dir)
    return bool(minted & logged) and all(t in logged or t in w.stored_at for t in minted)


def unreachable_then_kill(tmp: Path, size: Size) -> None:
    cycles = size.kills
    wal_dir = tmp / "wal"
    env = {"LUCIDGRANT_WAL_DIR": str(wal_dir)}
    with world(tmp, size) as w:
        w.add_grants()
        proc = w.start_operator(**env)
        w.wait_serving(60, "every grant serving before the faults")
        logged: set[str] = set()
        for _ in range(cycles):
            minted = set(w.rotated_at.copy())
            # The next answer comes 1.5 s after Lucid rotated: the API server goes away at the
            # rotation, so the answer arrives while the store cannot succeed.
            w.lucid.faults.slow(1.5, n=1, process_first=True)
            wait_for(
                partial(_minted_since, w, minted),
                timeout=3 * size.access_ttl,
                what="a rotation",
            )
            w.kube.faults.unreachable = True
            wait_for(
                partial(_answer_logged, w, wal_dir, minted),
                timeout=15,
                what="the answer in the log",
            )
            logged |= logged_tokens(wal_dir)
            w.stop(proc, signal.SIGKILL)
            w.kube.faults.unreachable = False
            proc = w.start_operator(**env)
        w.lucid.faults.clear()
        rotations = w.rotations()
        started = time.monotonic()
        recovery = w.wait_serving(60, "every grant serving after the last restart")
        w.stop_all()
        views = w.views()
        lost = sorted(n for n, v in views.items() if v.lost)
        flagged = sorted(n for n, v in views.items() if v.reauth)
        never_stored = sorted(t[:6] for t in logged if t not in w.stored_at)
        row = summary(
            w,
            "kube-unreachable-then-kill",
            fault="API server unreachable after Lucid answered, then SIGKILL, then API back",
            injection="Lucid slow(1.5 s, n=1, process_first) + API server unreachable from the "
            "rotation until the answer is in the log; SIGKILL; restart with the same log",
            count=f"{cycles} SIGKILLs over {rotations} rotations",
            lost=len(lost),
            flagged=len(flagged),
            recovery_s=recovery,
            logged_at_kill=len(logged),
            seconds_after_restart=round(time.monotonic() - started, 1),
        )
        assert not lost, f"grants lost: {lost}"
        assert not flagged, f"grants flagged for re-authorization: {flagged}"
        assert not never_stored, f"logged refresh tokens never stored: {never_stored}"
        assert row["invalid_grant"] == 0, "a refresh used a dead token"
        assert len(logged) >= cycles


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize("size", [SHORT, LONG], ids=["short", "long"])
def test_unreachable_then_kill(tmp_path: Path, size: Size) -> None:
    unreachable_then_kill(tmp_path, size)
