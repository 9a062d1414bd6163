"""The write-ahead log in a real process: Lucid answers a refresh while the API server is
unreachable, the process is killed before it could store the rotated refresh token, and the
next process, started with the same log directory, stores it; the grant lives on."""

from __future__ import annotations

import signal
from pathlib import Path

from lucidgrant.wal import FILE_NAME
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.lucid import LucidEmulator

from .harness import Cluster, leaked, logged_tokens, wait_for
from .test_operator import live_token_written, setup_grant

STATE = "reporting-lucidgrant-state"


def test_a_rotation_the_api_server_never_got_survives_a_kill(
    kube_api: tuple[KubeAPI, Path], cluster: Cluster, lucid: LucidEmulator, start_operator, tmp_path
):
    api = kube_api[0]
    wal = tmp_path / "wal"
    grant_id = setup_grant(cluster, lucid)
    proc = start_operator(LUCIDGRANT_WAL_DIR=str(wal))
    wait_for(lambda: live_token_written(cluster, lucid, grant_id), what="first rotation stored")
    before = lucid.grant_info(grant_id).rotations
    # Lucid rotates at once and answers 1.5 s later; the API server goes away in between.
    lucid.faults.slow(1.5, process_first=True)
    wait_for(lambda: lucid.grant_info(grant_id).rotations > before, what="the next rotation")
    api.faults.unreachable = True
    log = wal / FILE_NAME
    wait_for(lambda: log.stat().st_size > 0, timeout=10, what="the answer in the log")
    proc.stop(signal.SIGKILL)
    api.faults.unreachable = False
    lucid.faults.clear()
    live = lucid.grant_info(grant_id)
    assert live.rotations == before + 1
    assert (cluster.secret(STATE) or {}).get("refresh_token") != live.refresh_token, (
        "the killed process stored the token after all: the test did not test the log"
    )
    assert oct(log.stat().st_mode & 0o777) == "0o600"

    start_operator(LUCIDGRANT_WAL_DIR=str(wal))
    wait_for(
        lambda: (
            (cluster.secret(STATE) or {}).get("refresh_token")
            == lucid.grant_info(grant_id).refresh_token
        ),
        what="the logged rotation replayed into the state Secret",
    )
    wait_for(lambda: live_token_written(cluster, lucid, grant_id), what="serving again")
    wait_for(lambda: lucid.grant_info(grant_id).rotations > live.rotations, what="refreshing on")
    assert lucid.invalid_grant_count == 0
    assert not cluster.is_true("reporting", "ReauthorizationRequired")


def test_a_graceful_stop_leaves_no_token_in_the_log_directory(
    cluster: Cluster, lucid: LucidEmulator, start_operator, tmp_path
):
    """A pod deletion is a SIGTERM, then the emptyDir goes: the operator itself leaves nothing
    behind. SIGTERM lands while Lucid's answer is on its way; the process stores it, and the
    log it exits with holds no token, nor does anything else in its directory."""
    wal = tmp_path / "wal"
    grant_id = setup_grant(cluster, lucid)
    proc = start_operator(LUCIDGRANT_WAL_DIR=str(wal))
    wait_for(lambda: live_token_written(cluster, lucid, grant_id), what="first rotation stored")
    before = lucid.grant_info(grant_id).rotations
    lucid.faults.slow(1.5, process_first=True)  # rotated at once, answered 1.5 s later
    wait_for(lambda: lucid.grant_info(grant_id).rotations > before, what="the next rotation")
    assert proc.stop(signal.SIGTERM) == 0
    assert (cluster.secret(STATE) or {}).get("refresh_token") == lucid.grant_info(
        grant_id
    ).refresh_token, "the answer in flight at SIGTERM was not stored"
    assert (wal / FILE_NAME).stat().st_size == 0
    left = b"".join(p.read_bytes() for p in wal.rglob("*") if p.is_file())
    assert not [s for s in lucid.all_issued_secrets() if s.encode() in left]


def test_the_leak_scan_reads_what_lies_beside_the_log(
    cluster: Cluster, lucid: LucidEmulator, start_operator, tmp_path
):
    """The scan every e2e and chaos run ends with (OperatorProcess.said) reads the log lines
    that name the write-ahead log and every file next to it: a token planted in either is
    found; the log file itself is left out, since it holds tokens by design."""
    wal = tmp_path / "wal"
    grant_id = setup_grant(cluster, lucid)
    proc = start_operator(LUCIDGRANT_WAL_DIR=str(wal))
    wait_for(lambda: live_token_written(cluster, lucid, grant_id), what="first rotation stored")
    proc.stop(signal.SIGKILL)
    token = lucid.grant_info(grant_id).refresh_token
    assert token and not leaked({token}, proc.said())
    (wal / FILE_NAME).write_text(token)
    assert not leaked({token}, proc.said())
    line = f"write-ahead log {wal / FILE_NAME}: replaying {token}\n"
    for planted in (proc.log_path, wal / "rotations.log", tmp_path / "wal.txt"):
        saved = planted.read_bytes() if planted.exists() else None
        with planted.open("a") as f:
            f.write(line)
        assert leaked({token}, proc.said()), f"a token in {planted.name} went unseen"
        if saved is None:
            planted.unlink()
        else:
            planted.write_bytes(saved)


def test_an_answer_on_its_way_when_the_grace_runs_out_still_reaches_the_log(
    kube_api: tuple[KubeAPI, Path], cluster: Cluster, lucid: LucidEmulator, start_operator, tmp_path
):
    """SIGTERM while Lucid's answer to a refresh is on its way, with a grace period shorter
    than the wait and the state Secret unwritable: the shutdown lets the answer arrive (one
    call's deadline at most) instead of closing the connection on it, so the rotation is in
    the log, and the container's next start stores it."""
    api = kube_api[0]
    wal = tmp_path / "wal"
    grant_id = setup_grant(cluster, lucid)
    env = {"LUCIDGRANT_WAL_DIR": str(wal), "LUCIDGRANT_SHUTDOWN_GRACE": "0.5"}
    proc = start_operator(**env)
    wait_for(lambda: live_token_written(cluster, lucid, grant_id), what="first rotation stored")
    before = lucid.grant_info(grant_id).rotations
    lucid.faults.slow(2.0, process_first=True)  # rotated at once, answered 2 s later
    wait_for(lambda: lucid.grant_info(grant_id).rotations > before, what="the next rotation")
    api.faults.add("PATCH", STATE, status=503, seconds=600)
    assert proc.stop(signal.SIGTERM) == 0
    live = lucid.grant_info(grant_id).refresh_token
    assert live in logged_tokens(wal), "the answer in flight at shutdown was cut off"
    api.faults.clear()
    lucid.faults.clear()
    start_operator(**env)
    # The replay stores `live`, and the grant refreshes on from it (a look may miss `live`
    # itself); from the old token it would meet invalid_grant instead.
    wait_for(
        lambda: (
            (cluster.secret(STATE) or {}).get("refresh_token")
            == lucid.grant_info(grant_id).refresh_token
        ),
        what="the logged rotation replayed into the state Secret",
    )
    assert lucid.invalid_grant_count == 0
    assert not cluster.is_true("reporting", "ReauthorizationRequired")
